"""``blume-share audit``: verify, query, export and report on the audit store, and govern it."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final, TextIO

import typer
from blume_audit_sink import (
    NAME,
    AuditRecord,
    AuditSettings,
    DisclosureRequest,
    RecordFilter,
    SigningKeyError,
    TokenConfigError,
    checkpoint_dir,
    create_app,
    disclosures_as_csv,
    disclosures_as_html,
    disclosures_as_json,
    hash_token,
    key_id,
    new_private_key_text,
    new_token,
    private_key_from_text,
    public_key_text,
    record_as_json,
    spreadsheet_safe,
    token_hashes,
)
from blume_runtime.db import as_utc
from pydantic import ValidationError

from blume_share import audit_operations
from blume_share.audit_governance_cli import audit_purge, hold_app, retention_app
from blume_share.cli_support import Exit, counted, current_operator, fail, ready_settings, run_async

audit_app = typer.Typer(
    help="Verify, query, export and report on the hash-chained audit store.",
    no_args_is_help=True,
)
audit_app.add_typer(retention_app, name="retention")
audit_app.add_typer(hold_app, name="hold")


class OutputFormat(StrEnum):
    TABLE = "table"
    JSONL = "jsonl"
    CSV = "csv"


class ExportFormat(StrEnum):
    FHIR = "fhir"
    CSV = "csv"
    JSONL = "jsonl"


class ReportFormat(StrEnum):
    CSV = "csv"
    JSON = "json"
    HTML = "html"


def _audit_settings() -> AuditSettings:
    try:
        return AuditSettings()
    except ValidationError as error:
        fail(f"invalid BLUME_AUDIT_* environment: {error}", Exit.BAD_INPUT)


@contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with path.open("w", encoding="utf-8", newline="") as handle:
        yield handle


Tenant = Annotated[str | None, typer.Option(help="Only this tenant.")]
Since = Annotated[datetime | None, typer.Option(help="Events at or after (ISO 8601).")]
Until = Annotated[datetime | None, typer.Option(help="Events before (ISO 8601).")]
Output = Annotated[Path | None, typer.Option("--output", "-o", help="Write here, not stdout.")]


@audit_app.command("verify")
def audit_verify(
    tenant: Tenant = None,
    checkpoints: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoints",
            help="A directory of exported checkpoint files to verify against "
            "(default: the configured checkpoint directory).",
        ),
    ] = None,
) -> None:
    """Recompute the hash chains and hold them against signed checkpoints; exit 1 if broken."""
    settings = ready_settings()
    audit = _audit_settings()
    configured = checkpoint_dir(settings, audit)
    directories = checkpoints or ([configured] if configured and configured.exists() else [])
    for directory in directories:
        if not directory.is_dir():
            fail(f"no checkpoint directory {directory}", Exit.BAD_INPUT)
    try:
        report = run_async(
            audit_operations.audit_verify_against_checkpoints(settings, audit, tenant, directories)
        )
    except SigningKeyError as error:
        fail(str(error), Exit.UNAVAILABLE)
    for problem in report.problems:
        typer.echo(
            f"BROKEN chain={problem.chain_id} seq={problem.seq} {problem.kind}: {problem.detail}"
        )
    for purge in report.purges:
        typer.echo(
            f"purged chain={purge.chain_id} through seq={purge.through_seq} "
            f"({counted(purge.purged_rows, 'record')}) at {as_utc(purge.purged_at).isoformat()} "
            f"by {purge.purged_by}"
        )
    if report.pending:
        pending = counted(report.pending, "event")
        typer.echo(f"pending: {pending} received, not yet sealed into a chain")
    typer.echo(
        f"{'OK' if report.ok else 'FAILED'}: {counted(report.checked, 'record')} "
        f"in {counted(report.chains, 'chain')}, "
        f"{counted(report.checkpoints, 'signed checkpoint')}"
    )
    if not report.ok:
        raise typer.Exit(Exit.NO)


_TABLE_COLUMNS: Final = (
    "occurred_at",
    "chain_id",
    "seq",
    "event_type",
    "action",
    "outcome",
    "share_id",
    "patient_mrn",
)


def _print_table(records: list[AuditRecord]) -> None:
    """A header row, then one aligned row per record (``-`` for an empty cell)."""
    rows = [
        ["-" if values[name] is None else str(values[name]) for name in _TABLE_COLUMNS]
        for values in map(record_as_json, records)
    ]
    widths = [
        max([len(name), *(len(row[column]) for row in rows)])
        for column, name in enumerate(_TABLE_COLUMNS)
    ]
    for row in [list(_TABLE_COLUMNS), *rows]:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _export_filter(
    tenant: str | None,
    patient: str | None,
    share_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> RecordFilter:
    """What ``audit export`` selects by (``audit query`` by more): a tenant, a patient or a
    share, a period."""
    return RecordFilter(
        tenant_id=tenant, patient_mrn=patient, share_id=share_id, since=since, until=until
    )


@audit_app.command("query")
def audit_query(
    patient: Annotated[str | None, typer.Option(help="Patient MRN.")] = None,
    study_uid: Annotated[str | None, typer.Option(help="Study Instance UID.")] = None,
    share_id: Annotated[str | None, typer.Option(help="Share id.")] = None,
    sender: Annotated[str | None, typer.Option(help="Sending user's id.")] = None,
    recipient: Annotated[str | None, typer.Option(help="Recipient email.")] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="Event type.")] = None,
    correlation_id: Annotated[str | None, typer.Option(help="Correlation id.")] = None,
    tenant: Tenant = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Page size.")] = 100,
    offset: Annotated[int, typer.Option(min=0, help="Records to skip (paging).")] = 0,
    output: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.TABLE,
) -> None:
    """Search the audit store, oldest first, one page at a time."""
    settings = ready_settings()
    wanted = replace(
        _export_filter(tenant, patient, share_id, since, until),
        study_uid=study_uid,
        sender_user_id=sender,
        recipient_email=recipient,
        event_type=event_type,
        correlation_id=correlation_id,
    )
    records = run_async(
        audit_operations.audit_find(
            settings, wanted, limit=limit, offset=offset, operator=current_operator(settings)
        )
    )
    if output is OutputFormat.CSV:
        _print_csv(records)
    elif output is OutputFormat.JSONL:
        for record in records:
            typer.echo(json.dumps(record_as_json(record), ensure_ascii=False))
    else:
        _print_table(records)
    more = f"; next page: --offset {offset + limit}" if len(records) == limit else ""
    typer.echo(f"{counted(len(records), 'record')}{more}", err=True)


def _print_csv(records: list[AuditRecord]) -> None:
    """For people: spreadsheet-safe cells (``audit export --format csv`` keeps values raw)."""
    columns = (
        *_TABLE_COLUMNS,
        "study_uid",
        "sender_user_id",
        "recipient_email",
        "correlation_id",
        "agents",
    )
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        values = record_as_json(record)
        values["agents"] = json.dumps(values["agents"], ensure_ascii=False)
        writer.writerow(
            [spreadsheet_safe("" if values[c] is None else str(values[c])) for c in columns]
        )
    sys.stdout.flush()


@audit_app.command("export")
def audit_export(
    output_format: Annotated[ExportFormat, typer.Option("--format")] = ExportFormat.FHIR,
    tenant: Tenant = None,
    patient: Annotated[str | None, typer.Option(help="Patient MRN.")] = None,
    share_id: Annotated[str | None, typer.Option(help="Share id.")] = None,
    since: Since = None,
    until: Until = None,
    output: Output = None,
) -> None:
    """Export records: a FHIR R4 Bundle of AuditEvents (IHE BALP shapes), CSV or JSON Lines."""
    settings = ready_settings()
    wanted = _export_filter(tenant, patient, share_id, since, until)
    with _output(output) as out:
        count = run_async(
            audit_operations.audit_export(
                settings, wanted, output_format.value, out, current_operator(settings)
            )
        )
    typer.echo(f"{counted(count, 'record')} exported", err=True)


@audit_app.command("disclosures")
def audit_disclosures(
    tenant: Annotated[str, typer.Option(help="The tenant (covered entity).")],
    patient: Annotated[str, typer.Option(help="The patient's MRN.")],
    since: Annotated[
        datetime | None, typer.Option(help="From (ISO 8601; default six years back).")
    ] = None,
    until: Until = None,
    output_format: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.CSV,
    include_to_patient: Annotated[
        bool,
        typer.Option(
            help="Also list what reached the patient herself (her Blume record and its "
            "email) and sign-in code emails."
        ),
    ] = False,
    output: Output = None,
) -> None:
    """The accounting of disclosures (HIPAA 164.528) for one patient."""
    settings = ready_settings()
    report = run_async(
        audit_operations.audit_disclosures(
            settings,
            DisclosureRequest(tenant, patient, since, until, include_to_patient),
            current_operator(settings),
        )
    )
    render = {
        ReportFormat.CSV: disclosures_as_csv,
        ReportFormat.JSON: disclosures_as_json,
        ReportFormat.HTML: disclosures_as_html,
    }[output_format]
    with _output(output) as out:
        out.write(render(report))
    typer.echo(counted(len(report.disclosures), "disclosure"), err=True)


@audit_app.command("checkpoint")
def audit_checkpoint(tenant: Tenant = None) -> None:
    """Seal staged events and sign every chain's head now (for cron, or before an export)."""
    settings = ready_settings()
    try:
        sealed, made = run_async(
            audit_operations.audit_checkpoint_now(settings, _audit_settings(), tenant)
        )
    except SigningKeyError as error:
        fail(str(error), Exit.UNAVAILABLE)
    for checkpoint in made:
        typer.echo(f"checkpoint chain={checkpoint.chain_id} seq={checkpoint.seq}")
    typer.echo(
        f"{counted(sealed, 'event')} sealed, {counted(len(made), 'checkpoint')} signed", err=True
    )


@audit_app.command("keygen")
def audit_keygen() -> None:
    """Print a new Ed25519 checkpoint signing key (stdout) and its public key (stderr)."""
    private = new_private_key_text()
    public = private_key_from_text(private).public_key()
    typer.echo(private)
    typer.echo(f"public key (for BLUME_AUDIT_VERIFY_KEYS): {public_key_text(public)}", err=True)
    typer.echo(f"key id: {key_id(public)}", err=True)


@audit_app.command("api-token")
def audit_api_token(
    label: Annotated[str, typer.Option(help="Who the token is for, e.g. the compliance tool.")],
) -> None:
    """Print a new API token (stdout, give it to the client) and its configuration entry."""
    if ":" in label or "," in label or not label.strip():
        fail("the label must be non-empty, without ':' or ','", Exit.BAD_INPUT)
    token = new_token()
    typer.echo(token)
    typer.echo(f"add to BLUME_AUDIT_API_TOKENS: {label}:{hash_token(token)}", err=True)


@audit_app.command("serve-api")
def audit_serve_api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8081,
) -> None:
    """Serve the read-only compliance API (bearer tokens; every use is audited)."""
    import uvicorn

    settings = ready_settings()
    audit = _audit_settings()
    try:
        if not token_hashes(audit):
            fail("no API tokens configured: set BLUME_AUDIT_API_TOKENS", Exit.BAD_INPUT)
    except TokenConfigError as error:
        fail(str(error), Exit.BAD_INPUT)
    uvicorn.run(create_app(settings, audit, settings.service_database(NAME)), host=host, port=port)


audit_app.command("purge")(audit_purge)
