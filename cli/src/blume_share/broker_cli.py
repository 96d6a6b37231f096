"""``blume-share broker``: the RabbitMQ set-up this release expects."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from blume_runtime.broker_definitions import DEFAULT_VHOST, definitions

broker_app = typer.Typer(help="RabbitMQ users, permissions and policies.", no_args_is_help=True)


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
    topic permissions, the exchange and the at-least-once policy."""
    typer.echo(json.dumps(definitions(vhost, user_suffix=user_suffix), indent=2))
