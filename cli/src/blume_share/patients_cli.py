"""``blume-share patients``: the Blume patient accounts the portal path publishes into."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import blume_audit_sink as audit_sink
import blume_publisher
import typer
from blume_publisher import (
    AccountRecord,
    ImportFileError,
    describe_account,
    import_accounts,
    parse_accounts,
)
from blume_runtime.settings import Settings

from blume_share import operations
from blume_share.cli_support import (
    Exit,
    counted,
    current_operator,
    fail,
    load_settings,
    ready_settings,
    run_async,
)

patients_app = typer.Typer(help="Import and inspect Blume patient accounts.", no_args_is_help=True)


async def _import(settings: Settings, records: list[AccountRecord]) -> tuple[int, int]:
    """Commit the accounts with their ``patient.account.updated``, then publish those.

    On RabbitMQ they are published at once, so a request sent next finds the dispatcher's
    projection current; on the embedded default the next ``run``/``send`` relays them first.
    """
    correlation_id = f"patients-import-{uuid.uuid4()}"
    async with operations.session_scope(settings, schema=blume_publisher.NAME) as session:
        result = await import_accounts(session, records, correlation_id=correlation_id)
    if settings.amqp_url is not None:
        if settings.broker_user_map.misassigned([blume_publisher.NAME]):
            # Published as another user, consumers would refuse them as forged.
            typer.echo(
                "note: BLUME_AMQP_URL is not blume_publisher's broker user: the account "
                "events wait in the outbox for a running blume_publisher to publish them",
                err=True,
            )
        else:
            await operations.relay_committed(settings, result.staged, schema=blume_publisher.NAME)
    for kept in result.kept_choices:
        typer.echo(kept)
    return result.created, result.updated


async def _show(settings: Settings, blume_patient_id: str) -> dict[str, Any] | None:
    """The account as ``patients show`` prints it; the read is audited (``ops.records.read``)."""
    async with operations.session_scope(settings) as session:
        account = await describe_account(session, blume_patient_id)
        tenant = account.get("tenant_id") if account is not None else None
        await audit_sink.record_operator_read(
            session,
            event_type=audit_sink.RECORDS_READ_TYPE,
            operator=current_operator(settings),
            command="patients show",
            tenant=tenant if isinstance(tenant, str) else None,
            filters={"blume_patient_id": blume_patient_id},
            returned=0 if account is None else 1 + len(account["entries"]),
        )
        return account


@patients_app.command("import")
def import_file(
    source: Annotated[str, typer.Argument(help="JSON Lines file of accounts; - for stdin.")],
) -> None:
    """Create or update accounts; all or nothing (a bad line imports none)."""
    settings = load_settings()
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as error:
        fail(f"cannot read {source}: {error.strerror}", Exit.BAD_INPUT)
    try:
        records = parse_accounts(text)
    except ImportFileError as error:
        fail(f"{source}: {error}", Exit.BAD_INPUT)
    operations.prepare_embedded(settings)
    created, updated = run_async(_import(settings, records))
    typer.echo(f"{counted(created, 'account')} created, {updated} updated")


@patients_app.command("show")
def show(
    blume_patient_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """An account's status, preferences, consent and record entries (identifiers masked)."""
    settings = ready_settings()
    account = run_async(_show(settings, blume_patient_id))
    if account is None:
        fail(f"no account {blume_patient_id}", Exit.NO)
    if as_json:
        typer.echo(json.dumps(account))
        return
    entries = account.pop("entries")
    for key, value in account.items():
        typer.echo(f"{key:>20}: {value}")
    typer.echo(f"{'entries':>20}: {len(entries)}")
    for entry in entries:
        visibility = "" if entry["visible"] else " (hidden)"
        typer.echo(
            f"  {entry['entry_id']}  {entry['published_at']}  {entry['share_id']}{visibility}"
        )
