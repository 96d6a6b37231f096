"""``blume-share``: run the workers, send requests, inspect shares and the audit trail.

Exit codes: 0 success; 1 the answer is "no" (share not found, a share sent on the embedded
default did not complete, audit chain broken);
2 bad usage or bad input (typer's own usage errors are 2 as well); 3 a service is
unreachable or misconfigured.
"""

from __future__ import annotations

import json
import sys
import time
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import typer
from blume_access_gateway import GatewayConfigError
from blume_runtime.app import BrokerIdentityError
from blume_runtime.ops import OpsPortInUseError
from blume_runtime.settings import Settings
from cryptography.fernet import Fernet
from sqlalchemy.exc import SQLAlchemyError

from blume_share import operations
from blume_share.audit_cli import audit_app
from blume_share.broker_cli import broker_app
from blume_share.cli_support import (
    Exit,
    counted,
    current_operator,
    fail,
    load_settings_and_log,
    ready_settings,
    run_async,
)
from blume_share.dlq_cli import dlq_app
from blume_share.launch_cli import launch, launch_client_app
from blume_share.patients_cli import patients_app
from blume_share.requests import RequestFileError, parse_requests, revoke_request
from blume_share.services import RUNNABLE, WORKERS

app = typer.Typer(
    help="Blume Share: share imaging studies by secure link, with a full audit trail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _read_requests(source: str) -> list[Any]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as error:
        fail(f"cannot read {source}: {error.strerror}", Exit.BAD_INPUT)
    try:
        return parse_requests(text)
    except RequestFileError as error:
        fail(f"{source}: {error}", Exit.BAD_INPUT)


@app.command()
def run(
    services: Annotated[
        list[str] | None,
        typer.Argument(help=f"Services to run (default: all): {', '.join(RUNNABLE)}."),
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
    settings, log = load_settings_and_log()
    names = services or list(RUNNABLE)
    unknown = [name for name in names if name not in RUNNABLE]
    if unknown:
        fail(f"unknown service {', '.join(unknown)}; known: {', '.join(RUNNABLE)}", 2)
    if until_idle and not settings.embedded_broker:
        fail("--until-idle needs the embedded default (unset BLUME_AMQP_URL)", Exit.BAD_INPUT)
    requests = _read_requests(send) if send else []
    if example:
        requests += parse_requests(_bundled_example())
    try:
        operations.require_current_schema(settings, names)
    except operations.SchemaNotCurrentError as error:
        fail(str(error), Exit.UNAVAILABLE)
    except SQLAlchemyError as error:
        fail(f"database unreachable: {error}", Exit.UNAVAILABLE)
    if log is not None and not until_idle:
        typer.echo(f"running {', '.join(names)} on the embedded default; logs: {log}")
    try:
        report = run_async(operations.run(settings, names, requests, until_idle=until_idle))
    except GatewayConfigError as error:
        fail(f"access gateway: {error}", Exit.UNAVAILABLE)
    except (OpsPortInUseError, BrokerIdentityError) as error:
        fail(str(error), Exit.UNAVAILABLE)
    if report is not None:
        _report_idle_run(report, settings, log)


def _bundled_example() -> str:
    return files("blume_share").joinpath("examples/study-send-request.json").read_text()


def _report_idle_run(report: operations.IdleReport, settings: Settings, log: Path | None) -> None:
    """Print what happened; exit 1 unless every share completed and the audit chain holds."""
    for share in report.shares:
        typer.echo(f"share {share.share_id}: {_outcome_text(share)}")
    if settings.smtp_url is not None:
        typer.echo("emails: sent over SMTP (BLUME_SMTP_URL), not dropped in a folder")
    else:
        typer.echo(f"{counted(len(report.emails), 'email')} in {report.mail_drop.resolve()}")
        for email in report.emails:
            typer.echo(f"  {email.resolve()}")
    verdict = "intact" if report.audit.ok else "BROKEN"
    typer.echo(
        f"audit chain: {verdict}, {counted(report.audit.checked, 'record')} verified "
        f"in {report.database} (blume-share audit query)"
    )
    if log is not None:
        typer.echo(f"logs: {log}")
    unfinished = [share for share in report.shares if not share.completed]
    if unfinished:
        fail(
            f"{len(unfinished)} of {counted(len(report.shares), 'share')} did not complete",
            Exit.NO,
        )
    if not report.audit.ok:
        raise typer.Exit(Exit.NO)


def _outcome_text(share: operations.ShareOutcome) -> str:
    if share.state is None:
        return "not recorded (see the logs)"
    reason = f" ({share.reason})" if share.reason else ""
    message = f" - {share.message}" if share.message else ""
    return share.state + reason + message


@app.command()
def send(
    source: Annotated[
        str, typer.Argument(help="JSON, JSON array or JSON Lines file; - for stdin.")
    ],
) -> None:
    """Publish share requests; print each share id. On the embedded default, run them through."""
    settings, log = load_settings_and_log()
    requests = _read_requests(source)
    if settings.embedded_broker:
        operations.prepare_embedded(settings)
        report = run_async(operations.run(settings, list(WORKERS), requests, until_idle=True))
        _report_idle_run(report, settings, log)
        return
    run_async(operations.publish(settings, requests))
    for request in requests:
        typer.echo(request.share_id)


@app.command()
def status(
    share_id: Annotated[str, typer.Argument(help="The share's id (shr_...).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a share's state, "processing" until it has one (exit 1 if there is no such share)."""
    settings = ready_settings()
    fields = run_async(operations.share_status(settings, share_id, current_operator(settings)))
    if fields is None:
        fail(f"no share {share_id}", Exit.NO)
    if as_json:
        typer.echo(json.dumps(fields))
        return
    typer.echo(state_summary(fields))
    for key, value in fields.items():
        if value is not None:
            typer.echo(f"{key:>24}: {value}")
    if fields["state"] == operations.PROCESSING:
        typer.echo("the request has arrived; the dispatcher has not decided on it yet")


def state_summary(fields: dict[str, Any]) -> str:
    """One line: ``waiting: smtp_unavailable since <first failure>``, ``rejected: <reason>``."""
    if fields["state"] == "waiting":
        return f"waiting: {fields['reason']} since {fields.get('waiting_since') or 'unknown'}"
    reason = fields.get("reason")
    return str(fields["state"]) + (f": {reason}" if reason else "")


@app.command()
def revoke(
    share_id: Annotated[str, typer.Argument(help="The share's id (shr_...).")],
    reason: Annotated[str | None, typer.Option(help="Why (kept in the audit trail).")] = None,
    requested_by: Annotated[
        str, typer.Option("--by", help="Who asks (user id), for the audit trail.")
    ] = "ops",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the revocation.")] = 10.0,
) -> None:
    """End a share: its link stops working, its Blume entry is hidden (exit 1 if unknown)."""
    settings = ready_settings()
    share = run_async(operations.share_status(settings, share_id, None))
    if share is None:
        fail(f"no share {share_id}", Exit.NO)
    if share["state"] == operations.PROCESSING:
        fail(f"share {share_id} is still being processed; revoke it once it has a state", Exit.NO)
    if share["state"] == "revoked":
        typer.echo(f"share {share_id} was already revoked")
        return
    request = revoke_request(
        share_id, share["tenant_id"], share["correlation_id"], requested_by, reason
    )
    started = time.monotonic()
    if settings.embedded_broker:
        run_async(operations.run(settings, list(WORKERS), [request], until_idle=True))
    else:
        run_async(operations.publish(settings, [request]))
    done = run_async(operations.wait_for_state(settings, share_id, {"revoked"}, wait))
    elapsed_ms = round((time.monotonic() - started) * 1000)
    if done is None or done.state.value != "revoked":
        state = done.state.value if done else "gone"
        fail(f"share {share_id} is {state} after {elapsed_ms} ms; not revoked", Exit.NO)
    typer.echo(f"share {share_id} revoked in {elapsed_ms} ms")


@app.command()
def migrate() -> None:
    """Apply database migrations (idempotent), as the database's owner (BLUME_DATABASE_URL)."""
    from blume_share.schema import upgrade

    settings = ready_settings()
    try:
        upgrade(settings.database, role_prefix=settings.database_role_prefix)
    except SQLAlchemyError as error:
        fail(f"migration failed: {error}", Exit.UNAVAILABLE)
    typer.echo("database schema is up to date")


@app.command()
def keygen() -> None:
    """Print a new token-sealing key for BLUME_TOKEN_SEALING_KEY (keep it in a secret store)."""
    typer.echo(Fernet.generate_key().decode())


app.add_typer(audit_app, name="audit")
app.add_typer(patients_app, name="patients")
app.add_typer(dlq_app, name="dlq")
app.add_typer(broker_app, name="broker")
app.add_typer(launch_client_app, name="launch-client")
app.command("launch")(launch)


def main() -> None:
    app()
