"""``blume-share launch-client``: the upstream backends that may open sender launches, and
``blume-share launch``: the reference client OmegaAI's backend follows (issue 9)."""

from __future__ import annotations

import json
import webbrowser
from pathlib import Path
from typing import Annotated

import typer
from blume_access_gateway import create_launch_client, launch_clients, revoke_launch_client
from blume_runtime.db import utcnow

from blume_share import operations
from blume_share.cli_support import Exit, fail, ready_settings, run_async

launch_client_app = typer.Typer(
    help="Launch clients: upstream backends allowed to open the sender's sharing page.",
    no_args_is_help=True,
)


@launch_client_app.command("create")
def create(
    tenant: Annotated[str, typer.Option(help="The tenant the client may launch for.")],
    name: Annotated[str, typer.Option(help="A name to recognise it by (e.g. omegaai-prod).")],
) -> None:
    """Create a launch client; print its token once (only its hash is kept)."""
    settings = ready_settings()

    async def run() -> tuple[str, str]:
        async with operations.session_scope(settings) as session:
            record, token = await create_launch_client(session, tenant, name, utcnow())
            return record.client_id, token

    client_id, token = run_async(run())
    typer.echo(f"launch client {client_id} for tenant {tenant}")
    typer.echo(f"token (shown once; keep it in OmegaAI's secret store): {token}")


@launch_client_app.command("list")
def list_clients() -> None:
    """The launch clients: id, tenant, name, created, revoked."""
    settings = ready_settings()

    async def run() -> list[str]:
        async with operations.session_scope(settings) as session:
            return [
                f"{c.client_id}\t{c.tenant_id}\t{c.name}\t{c.created_at.isoformat()}\t"
                f"{c.revoked_at.isoformat() if c.revoked_at else 'active'}"
                for c in await launch_clients(session)
            ]

    for line in run_async(run()):
        typer.echo(line)


@launch_client_app.command("revoke")
def revoke(client_id: Annotated[str, typer.Argument(help="The client's id (lcl_...).")]) -> None:
    """Stop the client's token working at once."""
    settings = ready_settings()

    async def run() -> bool:
        async with operations.session_scope(settings) as session:
            return await revoke_launch_client(session, client_id, utcnow())

    if not run_async(run()):
        fail(f"no launch client {client_id}", Exit.NO)
    typer.echo(f"launch client {client_id} revoked")


def launch(
    tenant: Annotated[str, typer.Option(help="The tenant to launch for.")],
    request: Annotated[Path, typer.Option(help="JSON file of the launch body.")],
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the launch URL in the default browser.")
    ] = False,
    api_url: Annotated[
        str, typer.Option(envvar="BLUME_LAUNCH_API_URL", help="The gateway's internal URL.")
    ] = "http://127.0.0.1:8080",
    token: Annotated[
        str, typer.Option(envvar="BLUME_LAUNCH_CLIENT_TOKEN", help="The launch-client token.")
    ] = "",
) -> None:
    """Ask the gateway for a sender launch and print (or open) its one-time URL.

    This is the upstream side (what OmegaAI's backend does), so it uses the upstream client
    library, which the server image does not carry: install ``blume-share-client`` beside
    the CLI to use it (``make setup`` does, for development)."""
    try:
        from blume_share_client import BlumeShareError, LaunchClient
    except ImportError:
        fail("blume-share launch needs the upstream client library (blume-share-client)", Exit.NO)
    try:
        body = json.loads(request.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        fail(f"cannot read the launch body: {type(error).__name__}", Exit.BAD_INPUT)
    if not isinstance(body, dict) or not token:
        fail("need a JSON object and BLUME_LAUNCH_CLIENT_TOKEN (or --token)", Exit.BAD_INPUT)
    try:
        with LaunchClient(api_url, token) as client:
            created = client.create_launch(
                tenant_id=tenant,
                sender=body.get("sender", {}),
                study=body.get("study", {}),
                patient_account=body.get("patient_account"),
                locale=body.get("locale", "en-CA"),
            )
    except BlumeShareError as error:
        fail(str(error), Exit.NO)
    typer.echo(created.launch_url)
    if open_browser:
        webbrowser.open_new(created.launch_url)
