"""``blume-share audit retention|hold|purge``: how long records are kept, and what may go.

Purging removes whole sealed segments past the tenant's retention and under no legal hold;
the database checks every rule again (``blume_audit_sink.retention``, migration 0002).
"""

from __future__ import annotations

from typing import Annotated

import typer
from blume_audit_sink import PurgeRefusedError
from blume_runtime.db import as_utc

from blume_share import audit_operations
from blume_share.cli_support import Exit, counted, fail, ready_settings, run_async

retention_app = typer.Typer(help="Retention periods per tenant.", no_args_is_help=True)
hold_app = typer.Typer(help="Legal holds: records no purge may touch.", no_args_is_help=True)


@retention_app.command("set")
def retention_set(
    tenant: Annotated[str, typer.Option(help="The tenant.")],
    days: Annotated[int, typer.Option(min=1, help="Keep records this many days.")],
) -> None:
    """Set a tenant's retention period (the default is seven years)."""
    run_async(audit_operations.audit_set_retention(ready_settings(), tenant, days))
    typer.echo(f"retention for {tenant}: {counted(days, 'day')}")


@retention_app.command("show")
def retention_show(tenant: Annotated[str, typer.Option(help="The tenant.")]) -> None:
    """Print a tenant's retention period in days."""
    typer.echo(run_async(audit_operations.audit_retention_of(ready_settings(), tenant)))


@hold_app.command("place")
def hold_place(
    tenant: Annotated[str, typer.Option(help="The tenant.")],
    reason: Annotated[str, typer.Option(help="The matter, e.g. a case number.")],
    patient: Annotated[str | None, typer.Option(help="Only this patient's records.")] = None,
) -> None:
    """Place a legal hold; prints its id."""
    typer.echo(
        run_async(audit_operations.audit_place_hold(ready_settings(), tenant, patient, reason))
    )


@hold_app.command("release")
def hold_release(
    hold_id: Annotated[str, typer.Argument(help="The hold's id (hold place prints it).")],
    reason: Annotated[str, typer.Option(help="Why it is released.")],
) -> None:
    """Release a legal hold (the release is recorded beside it; nothing is deleted)."""
    try:
        run_async(audit_operations.audit_release_hold(ready_settings(), hold_id, reason))
    except LookupError as error:
        fail(str(error), Exit.NO)
    typer.echo(f"released {hold_id}")


@hold_app.command("list")
def hold_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's holds.")] = None,
) -> None:
    """List the legal holds in force."""
    for hold in run_async(audit_operations.audit_active_holds(ready_settings(), tenant)):
        typer.echo(
            f"{hold.hold_id}  {hold.chain_id}  patient={hold.patient_mrn or '(all)'}  "
            f"{as_utc(hold.at).isoformat()}  {hold.by}  {hold.reason}"
        )


def audit_purge(
    tenant: Annotated[str, typer.Option(help="The tenant.")],
    dry_run: Annotated[bool, typer.Option(help="Say what would go; remove nothing.")] = False,
) -> None:
    """Remove whole sealed segments past retention and not under legal hold.

    On PostgreSQL this needs a login granted blume_audit_purger; the database checks
    every rule again. Exit 1 when nothing may be purged.
    """
    try:
        plan, removed = run_async(
            audit_operations.audit_purge(ready_settings(), tenant, dry_run=dry_run)
        )
    except PurgeRefusedError as error:
        fail(f"purge refused: {error}", Exit.NO)
    if plan.through_seq is None:
        fail(f"nothing to purge for {tenant}: {plan.reason}", Exit.NO)
    verb = "would purge" if dry_run else "purged"
    typer.echo(
        f"{verb} {tenant} seq {plan.after_seq + 1}..{plan.through_seq}"
        + ("" if dry_run else f" ({counted(removed, 'record')})")
        + f"; retention {counted(plan.retention_days, 'day')}"
    )
