"""``blume-share broker``: the RabbitMQ set-up this release expects."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from blume_runtime.broker_definitions import DEFAULT_VHOST, definitions
from blume_runtime.settings import Settings
from blume_runtime.topology import delay_tiers
from pydantic import ValidationError

from blume_share.cli_support import Exit, fail

broker_app = typer.Typer(
    help="RabbitMQ users, permissions, policies and the topology.", no_args_is_help=True
)


@broker_app.command("definitions")
def print_definitions(
    vhost: Annotated[str, typer.Option(help="The virtual host to grant on.")] = DEFAULT_VHOST,
    user_suffix: Annotated[
        str,
        typer.Option(help="Appended to every user name (users are global to a broker node)."),
    ] = "",
) -> None:
    """Print least-privilege definitions for ``rabbitmqctl import_definitions``: a user per
    service, the gateway, ops and each upstream client (no passwords), their permissions and
    topic permissions, the exchanges, every service's queues and bindings (delay tiers up to
    BLUME_RETRY_MAX_DELAY_SECONDS) and the at-least-once policy."""
    try:
        # Only this setting is read: printing definitions needs no state directory or logs.
        tiers = delay_tiers(Settings().retry_max_delay_seconds)
    except ValidationError as error:
        fail(f"invalid BLUME_* environment: {error}", Exit.BAD_INPUT)
    typer.echo(json.dumps(definitions(vhost, user_suffix=user_suffix, tiers=tiers), indent=2))
