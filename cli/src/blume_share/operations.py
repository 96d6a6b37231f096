"""What the CLI does: plain async functions over the shared runtime, testable without a shell.

The ``audit`` commands' share is in ``audit_operations``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import blume_access_gateway as access_gateway
import blume_audit_sink as audit_sink
from blume_audit_sink import (
    RecordFilter,
    VerifyReport,
    find,
    record_as_json,
    verify_chains,
)
from blume_runtime.app import Runtime
from blume_runtime.db import Database
from blume_runtime.dead_letters import Operator
from blume_runtime.outbox import OutboxRelay
from blume_runtime.rabbit import RabbitTransport
from blume_runtime.settings import Settings
from blume_runtime.transport import OutgoingMessage
from blume_share_dispatcher import Share
from sqlalchemy import make_url
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_share.requests import PreparedRequest
from blume_share.schema import current, head, upgrade
from blume_share.services import GATEWAY, WORKERS
from blume_share.state_dir import secure_state_dir


def database(settings: Settings, *, schema: str | None = None) -> Database:
    """The migrator's database (``BLUME_DATABASE_URL``): on PostgreSQL its ``search_path``
    (migration 0011) finds every service's tables, which the CLI's reports read together.
    ``schema``: one service's schema, for a command that writes its outbox (and stages its
    events for the audit store, as the service would)."""
    secure_state_dir(settings)
    return Database(
        settings.database,
        schema=schema,
        stages_audit=None if schema else False,
        pool_size=settings.database_pool_size,
    )


@asynccontextmanager
async def session_scope(
    settings: Settings, *, schema: str | None = None
) -> AsyncIterator[AsyncSession]:
    """One transaction on a short-lived engine: what a CLI command needs, then closed."""
    db = database(settings, schema=schema)
    try:
        async with db.transaction() as session:
            yield session
    finally:
        await db.dispose()


class SchemaNotCurrentError(RuntimeError):
    pass


def prepare_embedded(settings: Settings) -> None:
    """The embedded default migrates its own SQLite file; production runs ``migrate``."""
    if settings.embedded_database:
        secure_state_dir(settings)
        upgrade(settings.database)


def require_current_schema(settings: Settings, names: Sequence[str] = ()) -> None:
    """Workers refuse to start on a database this release has not migrated (asked with each
    named service's own login: ``BLUME_<SERVICE>_DATABASE_URL``, else ``BLUME_DATABASE_URL``)."""
    prepare_embedded(settings)
    expected = head()
    for url in {settings.service_database(name) for name in names} or {settings.database}:
        found = current(url)
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


async def relay_committed(
    settings: Settings, messages: Sequence[OutgoingMessage], *, schema: str
) -> None:
    """Publish events a command committed to the outbox of ``schema`` (confirmed), then
    drop their rows.

    Should this fail, the rows stay and a running service's outbox sweep publishes them.
    """
    assert settings.amqp_url is not None
    db = database(settings, schema=schema)
    transport = RabbitTransport(
        settings.amqp_url.get_secret_value(), users=settings.broker_user_map
    )
    try:
        await transport.connect()
        relay = OutboxRelay(db, transport)
        await relay.publish_committed(messages)
        await relay.forget_published()
    finally:
        await transport.stop()
        await db.dispose()


@dataclass(frozen=True, slots=True)
class ShareOutcome:
    """Where a request's share ended: the dispatcher's state and reason, the human message."""

    share_id: str
    state: str | None
    """None: the dispatcher recorded no share for the request."""
    reason: str | None = None
    message: str | None = None
    """What ``share.rejected`` or ``share.failed`` said, as the audit trail keeps it."""

    @property
    def completed(self) -> bool:
        return self.state == "completed"


@dataclass(frozen=True, slots=True)
class IdleReport:
    """What a run that stopped once idle did (embedded default)."""

    shares: list[ShareOutcome]
    emails: list[Path]
    """The messages this run dropped (new, or rewritten), oldest first."""
    mail_drop: Path
    database: str
    """The database URL, any password masked."""
    audit: VerifyReport


_ENDINGS: Final = ("share.rejected", "share.failed")


async def _outcome(session: AsyncSession, share_id: str) -> ShareOutcome:
    share = await session.get(Share, share_id)
    if share is None:
        return ShareOutcome(share_id, None)
    ending = await find(session, RecordFilter(share_id=share_id, event_types=_ENDINGS), limit=1)
    message = record_as_json(ending[0])["data"].get("message") if ending else None
    return ShareOutcome(share_id, share.state.value, share.reason, message)


def _mail_stamps(mail_drop: Path) -> dict[Path, int]:
    """Each dropped message and when it was last written (the mail drop rewrites in place)."""
    return {path: path.stat().st_mtime_ns for path in mail_drop.glob("*.eml")}


async def run(
    settings: Settings,
    names: Sequence[str],
    requests: Sequence[PreparedRequest] = (),
    *,
    until_idle: bool = False,
) -> IdleReport | None:
    """Run the named workers, publish ``requests`` once started, until signalled or idle.

    With ``access_gateway`` among the names (and not ``until_idle``), the web gateway is
    served over HTTP beside the workers, on a thread of its own (its own event loop and
    database engine), handing what it commits to the runtime's outbox relay.
    """
    db = database(settings)
    mail_before = _mail_stamps(settings.mail_drop_dir)
    serving_gateway = GATEWAY in names and not until_idle
    freshness = access_gateway.Freshness(
        access_gateway.GatewaySettings().projection_max_lag_seconds
    )
    workers = [
        access_gateway.build(settings, freshness) if name == GATEWAY else WORKERS[name](settings)
        for name in names
        if name in WORKERS
    ]
    runtime = Runtime(settings, workers, db, serve_ops=not until_idle)
    probe = access_gateway.queue_probe(runtime.transport, GATEWAY)
    if serving_gateway:
        # The gateway serves from a thread of its own (its own loop and database engine) so
        # a flood of requests cannot starve the workers' loop; the queue it probes for its
        # freshness lives on this loop, so the probe runs here.
        freshness.attach(access_gateway.on_loop(asyncio.get_running_loop(), probe))
    else:
        freshness.attach(probe)

    async def publish_requests() -> None:
        if settings.embedded_broker:
            # What a command committed earlier (``patients import``) goes out first.
            await runtime.sweep(older_than=timedelta(0))
        for request in requests:
            await runtime.publish_request(request.message())

    try:
        if not until_idle:
            if serving_gateway:
                runtime.add(
                    access_gateway.ThreadedHttpServer(
                        settings, runtime.relay_for(GATEWAY), freshness
                    )
                )
            await runtime.run_until_signalled(on_started=publish_requests)
            return None
        await runtime.start()
        try:
            await publish_requests()
            await runtime.wait_until_idle()
        finally:
            await runtime.stop()
        async with db.transaction() as session:
            shares = [await _outcome(session, request.share_id) for request in requests]
            report = await verify_chains(session)
        written = [
            path
            for path, stamp in _mail_stamps(settings.mail_drop_dir).items()
            if mail_before.get(path) != stamp
        ]
        emails = sorted(written, key=lambda path: (path.stat().st_mtime_ns, path.name))
        database_shown = make_url(settings.database).render_as_string(hide_password=True)
        return IdleReport(shares, emails, settings.mail_drop_dir, database_shown, report)
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


PROCESSING: Final = "processing"
"""The state ``status`` shows while a share's request has arrived but the dispatcher has not
recorded the share yet."""


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


async def share_status(
    settings: Settings, share_id: str, operator: Operator | None
) -> dict[str, Any] | None:
    """The share as ``status`` shows it; None when nothing has heard of it. With an
    ``operator``, the read is audited (``ops.records.read``), found or not; ``revoke``
    passes none, as the revocation it asks for is audited itself.

    The audit sink records a request under the share id it will get, so a request the sink
    has received and the dispatcher has not yet decided is ``processing``, not unknown.
    """
    async with session_scope(settings) as session:
        share = await session.get(Share, share_id)
        seen = share is not None or await audit_sink.share_seen(session, share_id)
        if operator is not None:
            await audit_sink.record_operator_read(
                session,
                event_type=audit_sink.RECORDS_READ_TYPE,
                operator=operator,
                command="status",
                tenant=share.tenant_id if share is not None else None,
                filters={"share_id": share_id},
                returned=1 if seen else 0,
            )
        if share is None:
            return {"share_id": share_id, "state": PROCESSING} if seen else None
    return {
        "share_id": share.share_id,
        "state": share.state.value,
        "reason": share.reason,
        "method": share.method,
        "tenant_id": share.tenant_id,
        "correlation_id": share.correlation_id,
        "expires_at": share.expires_at.isoformat() if share.expires_at else None,
        "notification_message_id": share.notification_message_id,
        "waiting_since": share.waiting_since.isoformat() if share.waiting_since else None,
        "opened_count": share.opened_count,
        "first_opened_at": _iso(share.first_opened_at),
        "last_opened_at": _iso(share.last_opened_at),
        "accessed_count": share.accessed_count,
        "last_accessed_at": _iso(share.last_accessed_at),
        "created_at": share.created_at.isoformat(),
        "updated_at": share.updated_at.isoformat(),
    }
