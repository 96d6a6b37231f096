"""What the ``audit`` commands do: plain async functions over the audit sink's public API.

Every read of the audit log by an operator is itself audited (``ops.audit_log.read``), in
the read's own transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import blume_audit_sink as audit_sink
from blume_audit_sink import (
    AuditLegalHold,
    AuditRecord,
    AuditSettings,
    DisclosureReport,
    DisclosureRequest,
    RecordFilter,
    SignedCheckpoint,
    SigningKeyError,
    VerifyReport,
    accounting,
    checkpoint_chains,
    checkpoint_dir,
    find,
    seal_all,
    signing_key,
    verify_store,
)
from blume_runtime.dead_letters import Operator
from blume_runtime.settings import Settings
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_share.operations import database, session_scope


def _filters(wanted: RecordFilter) -> dict[str, Any]:
    return {name: value for name, value in asdict(wanted).items() if value is not None}


async def _log_read(
    session: AsyncSession,
    operator: Operator,
    command: str,
    tenant: str | None,
    filters: dict[str, Any],
    returned: int,
) -> None:
    """Audit an operator's read of the audit log: who, which command, what was asked, how
    many records it returned."""
    await audit_sink.record_operator_read(
        session,
        event_type=audit_sink.AUDIT_LOG_READ_TYPE,
        operator=operator,
        command=command,
        tenant=tenant,
        filters=filters,
        returned=returned,
    )


async def audit_verify_against_checkpoints(
    settings: Settings,
    audit: AuditSettings,
    tenant: str | None,
    checkpoint_dirs: Sequence[Path],
) -> VerifyReport:
    """The chains, held against every valid signed checkpoint (database and files)."""
    async with session_scope(settings) as session:
        return await verify_store(
            session, settings, audit, chain_id=tenant, checkpoint_dirs=checkpoint_dirs
        )


async def audit_find(
    settings: Settings, wanted: RecordFilter, *, limit: int, offset: int, operator: Operator
) -> list[AuditRecord]:
    """A page of matching records; the read itself is audited (``ops.audit_log.read``)."""
    async with session_scope(settings) as session:
        found = await find(session, wanted, limit=limit, offset=offset)
        filters = {**_filters(wanted), "limit": limit, "offset": offset}
        await _log_read(session, operator, "audit query", wanted.tenant_id, filters, len(found))
        return found


async def audit_export(
    settings: Settings, wanted: RecordFilter, output_format: str, out: TextIO, operator: Operator
) -> int:
    """Write every matching record to ``out`` (``fhir``, ``csv`` or ``jsonl``); the count.
    The export itself is audited (``ops.audit_log.read``)."""
    async with session_scope(settings) as session:
        count = await _write_export(session, wanted, output_format, out)
        filters = {**_filters(wanted), "format": output_format}
        await _log_read(session, operator, "audit export", wanted.tenant_id, filters, count)
        return count


async def _write_export(
    session: AsyncSession, wanted: RecordFilter, output_format: str, out: TextIO
) -> int:
    records = audit_sink.records_to_export(session, wanted)
    if output_format == "fhir":
        bundle = audit_sink.fhir_bundle([r async for r in records])
        out.write(audit_sink.fhir_json(bundle) + "\n")
        return len(bundle.entry or [])
    count = 0
    if output_format == "csv":
        out.write(",".join(audit_sink.CSV_COLUMNS) + "\n")
    async for record in records:
        if output_format == "csv":
            out.write(audit_sink.csv_text([record], header=False))
        else:
            out.write(audit_sink.jsonl_line(record) + "\n")
        count += 1
    return count


async def audit_disclosures(
    settings: Settings, wanted: DisclosureRequest, operator: Operator
) -> DisclosureReport:
    """The accounting of disclosures; producing it is audited (``ops.audit_log.read``)."""
    async with session_scope(settings) as session:
        report = await accounting(session, wanted)
        filters = {
            name: value for name, value in asdict(wanted).items() if value not in (None, False)
        }
        returned = len(report.disclosures)
        await _log_read(session, operator, "audit disclosures", wanted.tenant, filters, returned)
        return report


async def audit_checkpoint_now(
    settings: Settings, audit: AuditSettings, tenant: str | None
) -> tuple[int, list[SignedCheckpoint]]:
    """Seal every staged event, then sign the head of every chain not yet pinned."""
    key = signing_key(settings, audit)
    if key is None:
        raise SigningKeyError(
            "no audit signing key: set BLUME_AUDIT_SIGNING_KEY or BLUME_AUDIT_SIGNING_KEY_FILE"
        )
    db = database(settings)
    try:
        sealed = await seal_all(db)
        async with db.transaction() as session:
            made = await checkpoint_chains(
                session, key, checkpoint_dir(settings, audit), cadence=None, chain_id=tenant
            )
        return sealed, made
    finally:
        await db.dispose()


async def audit_set_retention(settings: Settings, tenant: str, days: int) -> None:
    async with session_scope(settings) as session:
        await audit_sink.set_retention(session, tenant, days, audit_sink.current_operator())


async def audit_retention_of(settings: Settings, tenant: str) -> int:
    async with session_scope(settings) as session:
        return await audit_sink.retention_days(session, tenant)


async def audit_place_hold(
    settings: Settings, tenant: str, patient_mrn: str | None, reason: str
) -> str:
    async with session_scope(settings) as session:
        return await audit_sink.place_hold(
            session, tenant, patient_mrn, reason, audit_sink.current_operator()
        )


async def audit_release_hold(settings: Settings, hold_id: str, reason: str) -> None:
    async with session_scope(settings) as session:
        await audit_sink.release_hold(session, hold_id, reason, audit_sink.current_operator())


async def audit_active_holds(settings: Settings, tenant: str | None) -> list[AuditLegalHold]:
    async with session_scope(settings) as session:
        return await audit_sink.active_holds(session, tenant)


async def audit_purge(
    settings: Settings, tenant: str, *, dry_run: bool
) -> tuple[audit_sink.PurgePlan, int]:
    """Plan the purge of ``tenant``'s expired sealed segments and, unless a dry run, do it."""
    async with session_scope(settings) as session:
        plan = await audit_sink.plan_purge(session, tenant)
        if dry_run or plan.through_seq is None:
            return plan, 0
        return plan, await audit_sink.purge(session, plan)
