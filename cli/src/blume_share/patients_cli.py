"""``blume-share patients``: the Blume patient accounts the portal path publishes into."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from blume_audit_sink.operator_reads import RECORDS_READ_TYPE, record_operator_read
from blume_publisher.accounts import (
    AccountRecord,
    ImportFileError,
    describe_account,
    parse_accounts,
    upsert_accounts,
)
from blume_publisher.models import PatientAccount
from blume_runtime.settings import Settings

from blume_share import operations
from blume_share.cli_support import (
    EXIT_BAD_INPUT,
    EXIT_NO,
    counted,
    current_operator,
    fail,
    load_settings,
    ready_settings,
    run_async,
)

patients_app = typer.Typer(help="Import and inspect Blume patient accounts.", no_args_is_help=True)


async def _import(settings: Settings, records: list[AccountRecord]) -> tuple[int, int]:
    async with operations.session_scope(settings) as session:
        return await upsert_accounts(session, records)


async def _show(settings: Settings, blume_patient_id: str) -> dict[str, Any] | None:
    """The account as ``patients show`` prints it; the read is audited (``ops.records.read``)."""
    async with operations.session_scope(settings) as session:
        account = await describe_account(session, blume_patient_id)
        found = await session.get(PatientAccount, blume_patient_id)
        await record_operator_read(
            session,
            event_type=RECORDS_READ_TYPE,
            operator=current_operator(settings),
            command="patients show",
            tenant=found.tenant_id if found is not None else None,
            filters={"blume_patient_id": blume_patient_id},
            returned=0 if account is None else 1 + len(account["entries"]),
            patient_mrn=found.mrn if found is not None else None,
        )
        return account


@patients_app.command("import")
def import_accounts(
    source: Annotated[str, typer.Argument(help="JSON Lines file of accounts; - for stdin.")],
) -> None:
    """Create or update accounts; all or nothing (a bad line imports none)."""
    settings = load_settings()
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as error:
        fail(f"cannot read {source}: {error.strerror}", EXIT_BAD_INPUT)
    try:
        records = parse_accounts(text)
    except ImportFileError as error:
        fail(f"{source}: {error}", EXIT_BAD_INPUT)
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
        fail(f"no account {blume_patient_id}", EXIT_NO)
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
