"""``blume-share audit``: verify and query the hash-chained audit store."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import typer

from blume_share import operations
from blume_share.cli_support import EXIT_NO, load_settings, run_async

audit_app = typer.Typer(help="Verify and query the hash-chained audit store.", no_args_is_help=True)


class OutputFormat(StrEnum):
    TABLE = "table"
    JSONL = "jsonl"


@audit_app.command("verify")
def audit_verify(
    tenant: Annotated[str | None, typer.Option(help="Verify one tenant's chain only.")] = None,
) -> None:
    """Recompute the hash chains; exit 1 and name each broken record if any."""
    settings = load_settings()
    operations.prepare_embedded(settings)
    report = run_async(operations.audit_verify(settings, tenant))
    for problem in report.problems:
        typer.echo(
            f"BROKEN chain={problem.chain_id} seq={problem.seq} {problem.kind}: {problem.detail}"
        )
    typer.echo(
        f"{'OK' if report.ok else 'FAILED'}: {report.checked} records in {report.chains} chains"
    )
    if not report.ok:
        raise typer.Exit(EXIT_NO)


@audit_app.command("query")
def audit_query(
    share_id: Annotated[str | None, typer.Option(help="Filter by share id.")] = None,
    study_uid: Annotated[str | None, typer.Option(help="Filter by Study Instance UID.")] = None,
    correlation_id: Annotated[str | None, typer.Option(help="Filter by correlation id.")] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="Filter by event type.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Filter by tenant.")] = None,
    since: Annotated[datetime | None, typer.Option(help="Events at or after (ISO 8601).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Events before (ISO 8601).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    output: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.TABLE,
) -> None:
    """Search the audit store."""
    settings = load_settings()
    operations.prepare_embedded(settings)
    records = run_async(
        operations.audit_query(
            settings,
            share_id=share_id,
            study_uid=study_uid,
            correlation_id=correlation_id,
            event_type=event_type,
            tenant=tenant,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )
    )
    for record in records:
        if output is OutputFormat.JSONL:
            typer.echo(
                json.dumps(
                    {
                        "chain_id": record.chain_id,
                        "seq": record.seq,
                        "event_id": record.event_id,
                        "event_type": record.event_type,
                        "occurred_at": record.occurred_at.isoformat(),
                        "share_id": record.share_id,
                        "correlation_id": record.correlation_id,
                        "study_uid": record.study_uid,
                        "data": json.loads(record.payload),
                        "hash": record.hash,
                    }
                )
            )
        else:
            typer.echo(
                f"{record.occurred_at.isoformat()}  {record.chain_id}#{record.seq:<6} "
                f"{record.event_type:<28} {record.share_id or '-'}"
            )
    if output is OutputFormat.TABLE:
        typer.echo(f"{len(records)} records", err=True)
