"""``blume-share dlq``: what each worker gave up on, and putting it back (or away) once fixed."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import typer
from blume_runtime.dead_letters import (
    Action,
    DeadLetter,
    NotOpsUserError,
    Outcome,
    Selection,
    act,
    list_dead_letters,
)
from blume_runtime.settings import Settings

from blume_share.cli_support import Exit, counted, current_operator, fail, load_settings, run_async
from blume_share.services import WORKERS

dlq_app = typer.Typer(
    help="Inspect, replay and purge the dead-letter queues (RabbitMQ only).",
    no_args_is_help=True,
)

IdOption = Annotated[list[str] | None, typer.Option("--id", help="A message id (repeat for more).")]
TypeOption = Annotated[
    list[str] | None, typer.Option("--type", help="An original event type (repeat for more).")
]
AllOption = Annotated[bool, typer.Option("--all", help="Every message in the queue.")]


def _rabbit_settings() -> tuple[Settings, str]:
    settings = load_settings()
    if settings.amqp_url is None:
        fail("dead-letter queues live on RabbitMQ: set BLUME_AMQP_URL", Exit.BAD_INPUT)
    return settings, settings.amqp_url.get_secret_value()


def _line(letter: DeadLetter) -> str:
    fields = letter.as_json()
    return "  " + "  ".join(
        f"{name}={'-' if value is None else value}" for name, value in fields.items()
    )


@dlq_app.command("list")
def list_queues(
    show: Annotated[int, typer.Option(min=0, help="Also describe the first N messages.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Each service's dead-letter count, and with --show its first messages: id, original
    event type, cause, error class, attempts, first and last failure, producer. Never bodies.

    Describing messages walks the queue once and leaves it in the same order, each message
    republished by the ops user with what it said (delivery counts are not touched)."""
    settings, url = _rabbit_settings()
    queues = run_async(list_dead_letters(url, list(WORKERS), show, settings.broker_user_map))
    if as_json:
        document = [
            {
                "service": queue.service,
                "depth": queue.depth,
                "messages": [letter.as_json() for letter in queue.letters],
            }
            for queue in queues
        ]
        typer.echo(json.dumps({"queues": document}))
        return
    for queue in queues:
        typer.echo(f"{queue.service:<20} {queue.depth}")
        for letter in queue.letters:
            typer.echo(_line(letter))


def _selection(
    ids: list[str] | None, types: list[str] | None, every: bool, limit: int | None
) -> Selection:
    chosen = [name for name, given in (("--id", ids), ("--type", types), ("--all", every)) if given]
    if len(chosen) != 1:
        fail("choose exactly one of --id, --type or --all", Exit.BAD_INPUT)
    by: Literal["id", "type", "all"] = "id" if ids else "type" if types else "all"
    return Selection(by, tuple(ids or types or ()), limit)


def _act(
    service: str,
    action: Literal[Action.REPLAY, Action.PURGE],
    selection: Selection,
) -> Outcome:
    if service not in WORKERS:
        fail(f"unknown service {service}; known: {', '.join(WORKERS)}", Exit.BAD_INPUT)
    settings, url = _rabbit_settings()
    try:
        outcome: Outcome = run_async(
            act(
                url,
                service,
                action,
                selection,
                current_operator(settings),
                settings.broker_user_map,
            )
        )
    except NotOpsUserError as error:
        fail(str(error), Exit.UNAVAILABLE)
    return outcome


def _command(
    name: str, action: Literal[Action.REPLAY, Action.PURGE], summary: str, done: str
) -> None:
    """Register ``dlq replay`` or ``dlq purge``: the same selection, another action."""

    def command(
        service: str,
        ids: IdOption = None,
        types: TypeOption = None,
        every: AllOption = False,
        limit: Annotated[int | None, typer.Option(min=1, help="At most this many.")] = None,
    ) -> None:
        outcome = _act(service, action, _selection(ids, types, every, limit))
        typer.echo(done.format(count=counted(len(outcome.moved), "message"), service=service))

    dlq_app.command(name, help=summary)(command)


_command(
    "replay",
    Action.REPLAY,
    "Move dead letters back onto their service's queue with a fresh retry budget (after "
    "fixing the cause). Each keeps its verified producer; the replay is audited.",
    "{count} replayed to blume.share.{service}",
)
_command(
    "purge",
    Action.PURGE,
    "Delete dead letters for good; the purge is audited.",
    "{count} purged from blume.share.{service}.dlq",
)
