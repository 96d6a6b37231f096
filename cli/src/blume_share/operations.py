"""What the CLI does: plain async functions over the shared runtime, testable without a shell."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from blume_audit_sink import export as audit_export_module
from blume_audit_sink import retention
from blume_audit_sink.chain import RecordFilter, VerifyReport, find, verify
from blume_audit_sink.checkpoints import (
    SignedCheckpoint,
    SigningKeyError,
    checkpoint_chains,
    signing_key,
)
from blume_audit_sink.disclosures import DisclosureReport, accounting
from blume_audit_sink.models import AuditLegalHold, AuditRecord
from blume_audit_sink.sealer import seal_all
from blume_audit_sink.settings import AuditSettings, checkpoint_dir
from blume_audit_sink.verification import verify_store
from blume_runtime.app import Runtime
from blume_runtime.db import Database
from blume_runtime.rabbit import RabbitTransport
from blume_runtime.settings import Settings
from blume_share_dispatcher.models import Share
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_share.requests import PreparedRequest
from blume_share.schema import current, head, upgrade
from blume_share.services import GATEWAY, SERVICES


def database(settings: Settings) -> Database:
    if settings.database_url is None:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    return Database(settings.database)


@asynccontextmanager
async def session_scope(settings: Settings) -> AsyncIterator[AsyncSession]:
    """One transaction on a short-lived engine: what a CLI command needs, then closed."""
    db = database(settings)
    try:
        async with db.transaction() as session:
            yield session
    finally:
        await db.dispose()


class SchemaNotCurrentError(RuntimeError):
    pass


def prepare_embedded(settings: Settings) -> None:
    """The embedded default migrates its own SQLite file; production runs ``migrate``."""
    if settings.database_url is None:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.database)


def require_current_schema(settings: Settings) -> None:
    """Workers refuse to start on a database this release has not migrated."""
    prepare_embedded(settings)
    found, expected = current(settings.database), head()
    if found != expected:
        raise SchemaNotCurrentError(
            f"database schema is at {found or 'nothing'}, this release needs {expected}: "
            "run blume-share migrate"
        )


async def publish(settings: Settings, requests: Sequence[PreparedRequest]) -> None:
    """Publish requests to RabbitMQ with publisher confirms."""
    assert settings.amqp_url is not None
    transport = RabbitTransport(settings.amqp_url.get_secret_value())
    await transport.connect()
    try:
        for request in requests:
            await transport.publish(request.message())
    finally:
        await transport.stop()


@dataclass(frozen=True, slots=True)
class IdleReport:
    """What a run that stopped once idle did (embedded default)."""

    shares: list[Share | None]
    mail_drop: Path
    database: str
    audit: VerifyReport


async def run(
    settings: Settings,
    names: Sequence[str],
    requests: Sequence[PreparedRequest] = (),
    *,
    until_idle: bool = False,
) -> IdleReport | None:
    """Run the named workers, publish ``requests`` once started, until signalled or idle.

    With ``access_gateway`` among the names (and not ``until_idle``), the web gateway is
    served over HTTP beside the workers, on the same database engine and outbox relay.
    """
    db = database(settings)
    workers = [SERVICES[name](settings) for name in names if name in SERVICES]
    serving_gateway = GATEWAY in names and not until_idle
    runtime = Runtime(
        settings,
        workers,
        db,
        serve_ops=not until_idle,
        publishers=[GATEWAY] if serving_gateway else [],
    )

    async def publish_requests() -> None:
        for request in requests:
            await runtime.publish_request(request.message())

    try:
        if not until_idle:
            http = None
            if serving_gateway:
                from blume_access_gateway.server import HttpServer

                http = HttpServer.from_settings(settings, db, runtime.relay)

            async def started() -> None:
                if http is not None:
                    await http.start()
                await publish_requests()

            await runtime.run_until_signalled(
                after_start=started, before_stop=http.stop if http is not None else None
            )
            return None
        await runtime.start()
        try:
            await publish_requests()
            await runtime.wait_until_idle()
        finally:
            await runtime.stop()
        async with db.transaction() as session:
            shares = [await session.get(Share, request.share_id) for request in requests]
            report = await verify(session)
        return IdleReport(shares, settings.mail_drop_dir, settings.database, report)
    finally:
        await db.dispose()


async def wait_for_state(
    settings: Settings, share_id: str, states: set[str], within_seconds: float
) -> Share | None:
    """Poll the share until it is in one of ``states`` (or the time is up); return it."""
    deadline = asyncio.get_running_loop().time() + within_seconds
    db = database(settings)
    try:
        while True:
            async with db.transaction() as session:
                share = await session.get(Share, share_id)
            if share is None or share.state in states:
                return share
            if asyncio.get_running_loop().time() > deadline:
                return share
            await asyncio.sleep(0.05)
    finally:
        await db.dispose()


async def share_status(settings: Settings, share_id: str) -> Share | None:
    async with session_scope(settings) as session:
        return await session.get(Share, share_id)


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
    settings: Settings, wanted: RecordFilter, *, limit: int, offset: int
) -> list[AuditRecord]:
    async with session_scope(settings) as session:
        return await find(session, wanted, limit=limit, offset=offset)


async def audit_export(
    settings: Settings, wanted: RecordFilter, output_format: str, out: TextIO
) -> int:
    """Write every matching record to ``out`` (``fhir``, ``csv`` or ``jsonl``); the count."""
    async with session_scope(settings) as session:
        records = audit_export_module.records_matching(session, wanted)
        if output_format == "fhir":
            bundle = audit_export_module.fhir_bundle([r async for r in records])
            out.write(audit_export_module.fhir_json(bundle) + "\n")
            return len(bundle.entry or [])
        count = 0
        if output_format == "csv":
            out.write(",".join(audit_export_module.CSV_COLUMNS) + "\n")
        async for record in records:
            if output_format == "csv":
                out.write(audit_export_module.csv_text([record], header=False))
            else:
                out.write(audit_export_module.jsonl_line(record) + "\n")
            count += 1
        return count


async def audit_disclosures(
    settings: Settings,
    *,
    tenant: str,
    patient_mrn: str,
    since: datetime | None,
    until: datetime | None,
    include_to_patient: bool,
) -> DisclosureReport:
    async with session_scope(settings) as session:
        return await accounting(
            session,
            tenant=tenant,
            patient_mrn=patient_mrn,
            since=since,
            until=until,
            include_to_patient=include_to_patient,
        )


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
        await retention.set_retention(session, tenant, days, retention.operator())


async def audit_retention_of(settings: Settings, tenant: str) -> int:
    async with session_scope(settings) as session:
        return await retention.retention_days(session, tenant)


async def audit_place_hold(
    settings: Settings, tenant: str, patient_mrn: str | None, reason: str
) -> str:
    async with session_scope(settings) as session:
        return await retention.place_hold(
            session, tenant, patient_mrn, reason, retention.operator()
        )


async def audit_release_hold(settings: Settings, hold_id: str, reason: str) -> None:
    async with session_scope(settings) as session:
        await retention.release_hold(session, hold_id, reason, retention.operator())


async def audit_active_holds(settings: Settings, tenant: str | None) -> list[AuditLegalHold]:
    async with session_scope(settings) as session:
        return await retention.active_holds(session, tenant)


async def audit_purge(
    settings: Settings, tenant: str, *, dry_run: bool
) -> tuple[retention.PurgePlan, int]:
    """Plan the purge of ``tenant``'s expired sealed segments and, unless a dry run, do it."""
    async with session_scope(settings) as session:
        plan = await retention.plan_purge(session, tenant)
        if dry_run or plan.through_seq is None:
            return plan, 0
        return plan, await retention.purge(session, plan)
