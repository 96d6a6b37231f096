"""``blume-share dlq``: what each worker gave up on, and putting it back once fixed."""

from __future__ import annotations

from typing import Annotated

import typer
from blume_runtime.dead_letters import list_dead_letters, replay

from blume_share.cli_support import EXIT_BAD_INPUT, counted, fail, load_settings, run_async
from blume_share.services import SERVICES

dlq_app = typer.Typer(
    help="Inspect and replay the dead-letter queues (RabbitMQ only).", no_args_is_help=True
)


def _amqp_url() -> str:
    settings = load_settings()
    if settings.amqp_url is None:
        fail("dead-letter queues live on RabbitMQ: set BLUME_AMQP_URL", EXIT_BAD_INPUT)
    return settings.amqp_url.get_secret_value()


@dlq_app.command("list")
def list_queues(
    show: Annotated[int, typer.Option(min=0, max=100, help="Also list the first N messages.")] = 0,
) -> None:
    """Each service's dead-letter count (and message ids, types and causes; never bodies)."""
    url = _amqp_url()
    for queue in run_async(list_dead_letters(url, list(SERVICES), show)):
        typer.echo(f"{queue.service:<20} {queue.depth}")
        for letter in queue.sample:
            typer.echo(
                f"  {letter.message_id or '-'}  {letter.routing_key or '-'}  {letter.reason or '-'}"
            )


@dlq_app.command("replay")
def replay_queue(
    service: str,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many.")] = None,
) -> None:
    """Move a service's dead letters back onto its queue (after fixing the cause)."""
    if service not in SERVICES:
        fail(f"unknown service {service}; known: {', '.join(SERVICES)}", EXIT_BAD_INPUT)
    moved = run_async(replay(_amqp_url(), service, limit))
    typer.echo(f"{counted(moved, 'message')} replayed to blume.share.{service}")
