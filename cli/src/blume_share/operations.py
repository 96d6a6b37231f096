"""What the CLI does: plain async functions over the shared runtime, testable without a shell."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from blume_audit_sink.chain import VerifyReport, query, verify
from blume_audit_sink.models import AuditRecord
from blume_runtime.app import Runtime
from blume_runtime.db import Database
from blume_runtime.rabbit import RabbitTransport
from blume_runtime.settings import Settings
from blume_share_dispatcher.models import Share

from blume_share.requests import PreparedRequest
from blume_share.schema import current, head, upgrade
from blume_share.services import SERVICES


def database(settings: Settings) -> Database:
    if settings.database_url is None:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    return Database(settings.database)


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
    """Run the named workers, publish ``requests`` once started, until signalled or idle."""
    db = database(settings)
    runtime = Runtime(settings, [SERVICES[name](settings) for name in names], db)

    async def publish_requests() -> None:
        for request in requests:
            await runtime.publish(request.message())

    try:
        if not until_idle:
            await runtime.run_until_signalled(after_start=publish_requests)
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
    db = database(settings)
    try:
        async with db.transaction() as session:
            return await session.get(Share, share_id)
    finally:
        await db.dispose()


async def audit_verify(settings: Settings, tenant: str | None) -> VerifyReport:
    db = database(settings)
    try:
        async with db.transaction() as session:
            return await verify(session, tenant)
    finally:
        await db.dispose()


async def audit_query(
    settings: Settings,
    *,
    share_id: str | None,
    study_uid: str | None,
    correlation_id: str | None,
    event_type: str | None,
    tenant: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
) -> list[AuditRecord]:
    db = database(settings)
    try:
        async with db.transaction() as session:
            return await query(
                session,
                share_id=share_id,
                study_uid=study_uid,
                correlation_id=correlation_id,
                event_type=event_type,
                tenant_id=tenant,
                since=since,
                until=until,
                limit=limit,
                offset=offset,
            )
    finally:
        await db.dispose()
