"""``blume-share``: run the workers, send requests, inspect shares and the audit trail.

Exit codes: 0 success; 1 the answer is "no" (share not found, audit chain broken);
2 bad usage or bad input (typer's own usage errors are 2 as well); 3 a service is
unreachable or misconfigured.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from enum import StrEnum
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from blume_runtime.logging import configure_logging
from blume_runtime.settings import Settings
from cryptography.fernet import Fernet
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from blume_share import operations
from blume_share.requests import RequestFileError, parse_requests
from blume_share.services import SERVICES

EXIT_NO = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3

app = typer.Typer(
    help="Blume Share: share imaging studies by secure link, with a full audit trail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
audit_app = typer.Typer(help="Verify and query the hash-chained audit store.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


class OutputFormat(StrEnum):
    TABLE = "table"
    JSONL = "jsonl"


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"blume-share: {message}", err=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as error:
        _fail(f"invalid BLUME_* environment: {error}", EXIT_BAD_INPUT)
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _run_async(coroutine: Any) -> Any:
    """Run a coroutine, turning an unreachable service into exit code 3 with a clear message."""
    try:
        return asyncio.run(coroutine)
    except (ConnectionError, OSError, TimeoutError) as error:
        _fail(f"service unreachable: {error}", EXIT_UNAVAILABLE)
    except Exception as error:
        if type(error).__module__.startswith(("sqlalchemy", "aiormq", "aio_pika", "psycopg")):
            _fail(f"service unreachable or misconfigured: {error}", EXIT_UNAVAILABLE)
        raise


def _read_requests(source: str) -> list[Any]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as error:
        _fail(f"cannot read {source}: {error.strerror}", EXIT_BAD_INPUT)
    try:
        return parse_requests(text)
    except RequestFileError as error:
        _fail(f"{source}: {error}", EXIT_BAD_INPUT)


@app.command()
def run(
    services: Annotated[
        list[str] | None,
        typer.Argument(help=f"Services to run (default: all): {', '.join(SERVICES)}."),
    ] = None,
    send: Annotated[
        str | None,
        typer.Option(help="Publish the requests in this file (or - for stdin) once started."),
    ] = None,
    example: Annotated[
        bool, typer.Option(help="Publish the bundled example request once started.")
    ] = False,
    until_idle: Annotated[
        bool,
        typer.Option(help="Embedded default only: stop once every message has been handled."),
    ] = False,
) -> None:
    """Run workers until SIGTERM (which drains in-flight work), or until idle."""
    settings = _settings()
    names = services or list(SERVICES)
    unknown = [name for name in names if name not in SERVICES]
    if unknown:
        _fail(f"unknown service {', '.join(unknown)}; known: {', '.join(SERVICES)}", 2)
    if until_idle and not settings.embedded_broker:
        _fail("--until-idle needs the embedded default (unset BLUME_AMQP_URL)", EXIT_BAD_INPUT)
    requests = _read_requests(send) if send else []
    if example:
        requests += parse_requests(_bundled_example())
    try:
        operations.require_current_schema(settings)
    except operations.SchemaNotCurrentError as error:
        _fail(str(error), EXIT_UNAVAILABLE)
    except SQLAlchemyError as error:
        _fail(f"database unreachable: {error}", EXIT_UNAVAILABLE)
    report = _run_async(operations.run(settings, names, requests, until_idle=until_idle))
    if report is not None:
        _print_idle_report(report)
        if not report.audit.ok:
            raise typer.Exit(EXIT_NO)


def _bundled_example() -> str:
    return files("blume_share").joinpath("examples/study-send-request.json").read_text()


def _print_idle_report(report: operations.IdleReport) -> None:
    for share in report.shares:
        if share is None:
            typer.echo("share: not recorded (see the log above)")
            continue
        outcome = share.state.value + (f" ({share.reason})" if share.reason else "")
        typer.echo(f"share {share.share_id}: {outcome}")
    emails = sorted(report.mail_drop.glob("*.eml")) if report.mail_drop.exists() else []
    typer.echo(f"emails ({len(emails)}) in {report.mail_drop.resolve()}")
    for email in emails[-len(report.shares) or None :]:
        typer.echo(f"  {email.resolve()}")
    typer.echo(f"audit trail: {report.database} (blume-share audit query)")
    verdict = "intact" if report.audit.ok else "BROKEN"
    typer.echo(f"audit chain: {verdict}, {report.audit.checked} records verified")


@app.command()
def send(
    source: Annotated[
        str, typer.Argument(help="JSON, JSON array or JSON Lines file; - for stdin.")
    ],
) -> None:
    """Publish share requests; print each share id. On the embedded default, run them through."""
    settings = _settings()
    requests = _read_requests(source)
    if settings.embedded_broker:
        operations.prepare_embedded(settings)
        report = _run_async(operations.run(settings, list(SERVICES), requests, until_idle=True))
        _print_idle_report(report)
        return
    _run_async(operations.publish(settings, requests))
    for request in requests:
        typer.echo(request.share_id)


@app.command()
def status(
    share_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a share's state (exit 1 if there is no such share)."""
    settings = _settings()
    operations.prepare_embedded(settings)
    share = _run_async(operations.share_status(settings, share_id))
    if share is None:
        _fail(f"no share {share_id}", EXIT_NO)
    fields = {
        "share_id": share.share_id,
        "state": share.state.value,
        "reason": share.reason,
        "method": share.method,
        "tenant_id": share.tenant_id,
        "correlation_id": share.correlation_id,
        "expires_at": share.expires_at.isoformat() if share.expires_at else None,
        "notification_message_id": share.notification_message_id,
        "created_at": share.created_at.isoformat(),
        "updated_at": share.updated_at.isoformat(),
    }
    if as_json:
        typer.echo(json.dumps(fields))
    else:
        for key, value in fields.items():
            typer.echo(f"{key:>24}: {'' if value is None else value}")


@app.command()
def migrate() -> None:
    """Apply database migrations (idempotent)."""
    from blume_share.schema import upgrade

    settings = _settings()
    operations.prepare_embedded(settings)
    try:
        upgrade(settings.database)
    except SQLAlchemyError as error:
        _fail(f"migration failed: {error}", EXIT_UNAVAILABLE)
    typer.echo("database schema is up to date")


@app.command()
def keygen() -> None:
    """Print a new token-sealing key for BLUME_TOKEN_SEALING_KEY (keep it in a secret store)."""
    typer.echo(Fernet.generate_key().decode())


@audit_app.command("verify")
def audit_verify(
    tenant: Annotated[str | None, typer.Option(help="Verify one tenant's chain only.")] = None,
) -> None:
    """Recompute the hash chains; exit 1 and name each broken record if any."""
    settings = _settings()
    operations.prepare_embedded(settings)
    report = _run_async(operations.audit_verify(settings, tenant))
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
    settings = _settings()
    operations.prepare_embedded(settings)
    records = _run_async(
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


def main() -> None:
    app()
