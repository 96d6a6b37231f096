"""Sealing: how staged events reach their chains in batches.

Events are only *staged* where they happen: each producer stages its events' rows in the
transaction that emits them, and the sink stages what it receives over the exchange, both
through ``blume_runtime.unit_of_work.stage_for_audit`` (one INSERT at the commit, with the
transaction's outbox rows). So nothing waits for a chain's head lock but the sealer, which
moves staged events into their chains in batches: one transaction takes a batch, vets each
row against the role that staged it (``staging_roles``), locks the heads, appends every
event with one COPY, and removes what it sealed. After each batch it signs the heads of
chains that are due a checkpoint.

This is the queued-then-sequenced design of transparency logs (Trillian's sequencer): the
staged rows are not yet chained, so the window in which they could be altered unseen is
the time to the next seal. Producers may only insert there (migration 0018), and each
staging commit wakes the sealer, so the window is a fraction of a second.

While nothing is staged the sealer sleeps: a commit that stages a row wakes it (NOTIFY on
PostgreSQL, a call in this process on SQLite), and a start seals what a previous process
left. Its fallback round (``interval_seconds``, and no longer than the checkpoint cadence's
time) is only for what no wake-up announced (the listening connection was being
re-established) and for checkpoints that fall due by time alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC
from operator import itemgetter
from pathlib import Path
from typing import Any, Final

import psycopg
import structlog
from blume_runtime.db import Database, on_audit_staged, utcnow
from blume_runtime.lifecycle import cancel_and_wait
from blume_runtime.metrics import AUDIT_RECORDS_SEALED, AUDIT_SEALING_LAG
from blume_runtime.unit_of_work import OUTSIDE_TYPES
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Table, any_, delete, func, literal
from sqlalchemy import select as sql_select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_audit_sink.append import append_rows
from blume_audit_sink.checkpoints import Cadence, checkpoint_chains
from blume_audit_sink.models import SCHEMA, AuditPending, AuditRecord
from blume_audit_sink.staging_roles import StagingRoles

log = structlog.get_logger("audit_sink")

_LINGER_SECONDS: Final = 0.1
"""After a wake-up, let more events arrive, so that a burst is sealed in one batch.

A round costs about as much for one event as for twenty (its statements are per batch, not
per event): under a steady load of shares, a tenth of a second gathers several shares'
events in one round, and a staged row still waits only a fraction of a second."""


_RELISTEN_SECONDS: Final = 1.0
"""After the listening connection fails, how long before it connects again."""
STAGED_CHANNEL: Final = "blume_audit_staged"
"""What the staging table's trigger notifies as staged rows commit (migration 0018)."""

_PENDING: Final[Table] = AuditPending.__table__  # type: ignore[attr-defined]
_RECORDS: Final[Table] = AuditRecord.__table__  # type: ignore[attr-defined]
_BY_ID: Final = itemgetter(0)
_RECORDED: Final = (
    sql_select(_RECORDS.c.seq)
    .where(_RECORDS.c.event_id == _PENDING.c.event_id)
    .where(_RECORDS.c.event_source == _PENDING.c.event_source)
    .scalar_subquery()
    .is_not(None)
    .label("recorded")
)
"""Whether a staged event is in the store already (a copy staged again after its sealing).

A scalar subquery (the pair is unique), not EXISTS: PostgreSQL may run an EXISTS as one
hashed subplan that reads the whole store on every batch, which grows with the store;
this is one probe of the unique index per taken row, whatever the store's size."""
_NOT_ASKED: Final = literal(False).label("recorded")
_REFUSED_BY_KEY: Final = (IntegrityError, psycopg.errors.IntegrityError)
"""A key's refusal as SQLAlchemy raises it (an INSERT) and as the driver does (a COPY)."""


async def _take_staged(
    session: AsyncSession, batch_size: int, *, ask_store: bool
) -> list[tuple[str, str, bool]]:
    """Remove up to ``batch_size`` staged events, oldest first: each one's entry, who
    staged it, and whether the store holds it already (False for each when the store is
    not asked).

    Removed in the transaction that chains them: if it fails, they are staged again.
    Concurrent sealers take disjoint batches (SKIP LOCKED). Asking for the records in the
    same statement is sound: a second copy of an event can only be staged once the first
    copy's removal has committed (staging it waits on the removed row), with its record.
    """
    oldest = (
        sql_select(_PENDING.c.id)
        .order_by(_PENDING.c.id)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    recorded = _RECORDED if ask_store else _NOT_ASKED
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        taken = await connection.execute(
            delete(_PENDING)
            # id = ANY(ARRAY(...)): one scan of the key for the ids taken; IN (...) joined
            # them back to the table through a hash of the ids.
            .where(_PENDING.c.id == any_(func.array(oldest.scalar_subquery())))
            .returning(_PENDING.c.id, _PENDING.c.entry, _PENDING.c.staged_by, recorded)
        )
        # Sorted by id alone: comparing the rows themselves (as tuples) cost more than
        # the rest of the take.
        return [
            (entry, staged_by, is_recorded)
            for _, entry, staged_by, is_recorded in sorted(taken, key=_BY_ID)
        ]
    rows = (
        await connection.execute(
            sql_select(_PENDING.c.id, _PENDING.c.entry, _PENDING.c.staged_by, recorded)
            .where(_PENDING.c.id.in_(oldest.scalar_subquery()))
            .order_by(_PENDING.c.id)
        )
    ).all()
    await connection.execute(delete(_PENDING).where(_PENDING.c.id.in_([row.id for row in rows])))
    return [(row.entry, row.staged_by, bool(row.recorded)) for row in rows]


class SealedRequests:
    """The (source, id) of the requests (outside types) this process sealed lately.

    A request is staged by each consumer of ours that claims it and by the sink: a copy
    staged after the first was sealed would make the store's unique key refuse its whole
    batch, rolled back and chained again asking the store about every row. Remembered here,
    such a copy is dropped as it is taken. Forgetting (another sink sealed it, or it is
    older than the last ``size`` requests) costs only that slower path.
    """

    def __init__(self, size: int = 10_000) -> None:
        # About 240 bytes a request (measured: +3.3 MB of the sink's memory over 13,600
        # shares), so at most some 2.4 MB; a late copy comes seconds after the first.
        self._size = size
        self._keys: dict[tuple[str, str], None] = {}

    def among(self, rows: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
        return {
            key for row in rows if (key := (row["event_source"], row["event_id"])) in self._keys
        }

    def remember(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            if row["event_type"] in OUTSIDE_TYPES:
                self._keys[(row["event_source"], row["event_id"])] = None
        while len(self._keys) > self._size:
            del self._keys[next(iter(self._keys))]


async def seal_batch(
    db: Database,
    batch_size: int,
    roles: StagingRoles | None = None,
    requests: SealedRequests | None = None,
) -> int:
    """Chain up to ``batch_size`` staged events, oldest first; returns how many were taken.

    Each is first vetted against who staged it (``roles``; ``staging_roles``): a row its
    stager may not stage is chained as a security record instead.

    The store's unique key on (source, id) is what keeps an event from being recorded twice,
    so a batch is first chained without asking the store about each event (a request sealed
    lately, ``requests``, is dropped at once). Only when the key refuses one (a copy staged
    again after its first copy was sealed: a redelivery, rare) is the batch rolled back,
    staged rows included, and chained again, asking the store about each event as it is
    taken (that probe was about a tenth of a batch's time).
    """
    roles = roles or StagingRoles()
    requests = requests or SealedRequests()
    try:
        taken, written = await _seal(db, batch_size, roles, requests, ask_store=False)
    except _REFUSED_BY_KEY:
        taken, written = await _seal(db, batch_size, roles, requests, ask_store=True)
    AUDIT_RECORDS_SEALED.inc(written)
    return taken


async def _seal(
    db: Database,
    batch_size: int,
    roles: StagingRoles,
    requests: SealedRequests,
    *,
    ask_store: bool,
) -> tuple[int, int]:
    written: list[dict[str, Any]] = []
    async with db.transaction() as session:
        staged = await _take_staged(session, batch_size, ask_store=ask_store)
        if staged:
            rows = await roles.vet(session, [(text, staged_by) for text, staged_by, _ in staged])
            recorded = requests.among(rows) | {
                (row["event_source"], row["event_id"])
                for row, (_, _, is_recorded) in zip(rows, staged, strict=True)
                if is_recorded
            }
            written = await append_rows(session, rows, recorded=recorded)
    requests.remember(written)
    return len(staged), len(written)


async def seal_all(
    db: Database,
    batch_size: int = 2000,
    roles: StagingRoles | None = None,
    requests: SealedRequests | None = None,
) -> int:
    sealed = 0
    roles = roles or StagingRoles()
    requests = requests or SealedRequests()
    while taken := await seal_batch(db, batch_size, roles, requests):
        sealed += taken
    return sealed


async def pending_count(session: AsyncSession) -> int:
    return (await session.exec(select(func.count()).select_from(AuditPending))).one()


async def sealing_lag_seconds(db: Database) -> float:
    """How long the oldest staged event has waited for its chain (0 when none waits)."""
    async with db.transaction() as session:
        oldest = (await session.exec(select(func.min(AuditPending.received_at)))).one()
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:  # SQLite hands back naive UTC
        oldest = oldest.replace(tzinfo=UTC)
    return max(0.0, (utcnow() - oldest).total_seconds())


async def checkpoint_due(
    db: Database,
    key: Ed25519PrivateKey | None,
    directory: Path | None,
    cadence: Cadence | None,
) -> int:
    """Sign the chains that are due (all unpinned ones when ``cadence`` is None)."""
    if key is None:
        return 0
    async with db.transaction() as session:
        return len(await checkpoint_chains(session, key, directory, cadence=cadence))


class ChainSealer:
    """The background loop of one sink process: seal staged events, then checkpoint.

    A component of the service (``Service.components``), started and stopped by the
    runtime, on its own engine so it never waits for a connection the handlers hold. It is
    woken as soon as staged rows commit: by this process's own transactions
    (``blume_runtime.db.on_audit_staged``), and on PostgreSQL by every process's, through
    the staging table's NOTIFY (migration 0018) on a connection that only listens.
    Otherwise it waits ``interval_seconds`` (at most the cadence's ``every_seconds``) before
    looking again. Stopping it seals what is left and signs every chain's head.
    """

    def __init__(
        self,
        *,
        database_url: str,
        key: Ed25519PrivateKey | None,
        directory: Path | None,
        cadence: Cadence,
        batch_size: int,
        interval_seconds: float,
    ) -> None:
        self._database_url = database_url
        self._key = key
        self._directory = directory
        self._cadence = cadence
        self._batch_size = batch_size
        self._interval = min(interval_seconds, cadence.every_seconds)
        self._roles = StagingRoles()
        self._requests = SealedRequests()
        self._db: Database | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._forget_listener: Callable[[], None] | None = None
        self._wake = asyncio.Event()
        if key is None:
            log.warning("no audit signing key configured: checkpoints are not written")

    async def start(self) -> None:
        """Start the loop, which also seals what a previous process left staged."""
        self._ensure_running()

    def notice(self) -> None:
        """An event was staged: wake the loop (starting it, if the runtime did not)."""
        self._ensure_running()
        self._wake.set()

    def _ensure_running(self) -> None:
        if self._db is not None:
            return
        self._db = Database(self._database_url, schema=SCHEMA)
        self._forget_listener = on_audit_staged(self.notice)
        self._tasks.append(asyncio.create_task(self._run(), name="audit-sealer"))
        if not self._db.is_sqlite:
            self._tasks.append(asyncio.create_task(self._listen(), name="audit-sealer-listen"))

    async def _listen(self) -> None:
        """Wake the loop on every NOTIFY of staged rows, reconnecting after a failure."""
        conninfo = make_url(self._database_url).set(drivername="postgresql")
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    conninfo.render_as_string(hide_password=False), autocommit=True
                ) as connection:
                    await connection.execute(f"LISTEN {STAGED_CHANNEL}")
                    self._wake.set()  # what was staged while nobody listened
                    async for _ in connection.notifies():
                        self._wake.set()
            except Exception as error:  # noqa: BLE001 - the loop's round still seals meanwhile
                log.warning("audit staging listener failed", error_type=type(error).__name__)
            await asyncio.sleep(_RELISTEN_SECONDS)

    async def _run(self) -> None:
        assert self._db is not None
        while True:
            sealed = 0
            try:
                sealed = await seal_batch(self._db, self._batch_size, self._roles, self._requests)
                await checkpoint_due(self._db, self._key, self._directory, self._cadence)
                # A round that took less than a batch took every staged row it could see:
                # what is left was staged since, or is being sealed by another sink. Only a
                # backlog needs the lag asked of the database.
                backlog = sealed == self._batch_size
                AUDIT_SEALING_LAG.set(await sealing_lag_seconds(self._db) if backlog else 0.0)
            except Exception as error:  # noqa: BLE001 - staged rows stay; the next round retries
                log.warning("audit sealing failed", error_type=type(error).__name__)
                # A sealer that keeps failing shows as a growing lag (and its alert).
                with contextlib.suppress(Exception):
                    AUDIT_SEALING_LAG.set(await sealing_lag_seconds(self._db))
            if sealed == self._batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            if self._wake.is_set():
                self._wake.clear()
                await asyncio.sleep(_LINGER_SECONDS)

    async def stop(self) -> None:
        """Seal what is left staged and sign every chain's head."""
        if self._db is None:
            return
        if self._forget_listener is not None:
            self._forget_listener()
            self._forget_listener = None
        for task in self._tasks:
            await cancel_and_wait(task)
        try:
            sealed = await seal_all(self._db, self._batch_size, self._roles, self._requests)
            signed = await checkpoint_due(self._db, self._key, self._directory, None)
            log.info("audit sealer stopped", sealed=sealed, checkpoints=signed, at=utcnow())
        finally:
            await self._db.dispose()
            self._tasks = []
            self._db = None
