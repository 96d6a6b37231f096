"""The inbox on real PostgreSQL (psycopg 3): a redelivered event has no second effect.

The handler here keeps no record of its own, so only the inbox stands between a redelivery
and a second effect (issue 8, defect 2: the claim trusted ``rowcount``, which psycopg 3
reports as -1 for ``INSERT ... ON CONFLICT DO NOTHING`` whether or not a row went in).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from blume_contracts.audit_entry import AUDIT_SCHEMA, AUDIT_STAGING_TABLE
from blume_contracts.envelope import CloudEvent
from blume_runtime.db import (
    STAGED_AUDIT,
    STAGED_OUTBOX,
    Database,
    InboxEntry,
    OutboxMessage,
    utcnow,
)
from blume_runtime.outbox import OutboxRelay
from blume_runtime.retry import DATABASE_UNAVAILABLE, classify
from blume_runtime.service import HandlerContext, Service
from blume_runtime.settings import Settings
from blume_runtime.testing import FakeDelivery, RecordingTransport
from blume_runtime.worker import Worker
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlmodel import select

from runtime.tests.batch_support import (
    Gated,
    behind_gate,
    committed,
    committing_behind_gate,
    gated_worker,
    statements,
    transactions,
)
from runtime.tests.pipeline_support import accepted_event

pytestmark = pytest.mark.integration


class Unguarded:
    """Counts its runs: an effect with no idempotency guard of its own."""

    def __init__(self) -> None:
        self.runs = 0
        self.service = Service("unguarded")
        self.service.handles("share.accepted")(self.handle)

    async def handle(self, _event: CloudEvent[Any], _ctx: HandlerContext) -> None:
        self.runs += 1


@pytest.fixture
async def postgres(migrated_database_url: str) -> AsyncIterator[Database]:
    database = Database(migrated_database_url)
    yield database
    await database.dispose()


def worker_for(db: Database, handler: Unguarded, tmp_path: Path) -> Worker:
    relay = OutboxRelay(db, RecordingTransport())
    return Worker(handler.service, db, relay, Settings(state_dir=tmp_path))


async def test_a_redelivered_event_runs_an_unguarded_handler_once(
    postgres: Database, tmp_path: Path
) -> None:
    """Processed, then delivered again (a broker redelivery): acked twice, effect once."""
    handler = Unguarded()
    worker = worker_for(postgres, handler, tmp_path)
    first, again = FakeDelivery.of(accepted_event()), FakeDelivery.of(accepted_event())
    await worker(first)
    await worker(again)
    assert (first.settlement, again.settlement) == ("ack", "ack")
    assert handler.runs == 1
    async with postgres.transaction() as session:
        rows = (await session.exec(select(InboxEntry))).all()
    assert [(row.consumer, row.event_id) for row in rows] == [("unguarded", "evt-1")]


async def test_racing_duplicates_run_an_unguarded_handler_once(
    postgres: Database, tmp_path: Path
) -> None:
    """Five copies delivered at once (several consumers, one message): one effect."""
    handler = Unguarded()
    worker = worker_for(postgres, handler, tmp_path)
    copies = [FakeDelivery.of(accepted_event()) for _ in range(5)]
    await asyncio.gather(*(worker(copy) for copy in copies))
    assert [copy.settlement for copy in copies] == ["ack"] * 5
    assert handler.runs == 1


async def test_distinct_events_each_run_once(postgres: Database, tmp_path: Path) -> None:
    """The claim does not mistake a new event for a duplicate."""
    handler = Unguarded()
    worker = worker_for(postgres, handler, tmp_path)
    for event_id in ("evt-1", "evt-2", "evt-3"):
        await worker(FakeDelivery.of(accepted_event(event_id)))
    assert handler.runs == 3


async def test_a_batch_claims_once_and_keeps_each_outcome_on_postgres(
    postgres: Database, tmp_path: Path
) -> None:
    """On PostgreSQL, a batch holding a duplicate and a failing handler: the batch rolls
    back, each runs alone; the duplicate acked with no second effect, the failing one
    retried, its neighbours acked with their inbox and outbox rows written once."""
    gated = Gated()
    gated.failing = {"c"}
    worker, _ = gated_worker(postgres, gated, tmp_path)
    deliveries = await behind_gate(worker, gated, ["a", "a", "b", "c"])
    assert [delivery.settlement for delivery in deliveries] == ["ack", "ack", "ack", "retry"]
    assert await committed(postgres) == (["a", "b"], 3)


async def test_queued_deliveries_commit_in_one_transaction_on_postgres(
    postgres: Database, tmp_path: Path
) -> None:
    """Five deliveries queued behind a running one: two commits in all, each acked once."""
    gated = Gated()
    worker, _ = gated_worker(postgres, gated, tmp_path)
    deliveries, committed_transactions = await committing_behind_gate(
        worker, gated, ["a", "b", "c", "d", "e"]
    )
    assert committed_transactions == 2
    assert [delivery.settlement for delivery in deliveries] == ["ack"] * 5
    assert await committed(postgres) == (["a", "b", "c", "d", "e"], 6)


async def test_a_delivery_alone_costs_one_transaction_and_two_statements(
    postgres: Database, tmp_path: Path
) -> None:
    """Nothing queued: one transaction of two statements, the inbox claim and the outbox
    row, as before batching (the handler itself queries nothing); no wait for company."""
    gated = Gated()
    gated.release.set()
    worker, _ = gated_worker(postgres, gated, tmp_path)
    await worker(FakeDelivery.of(accepted_event("warm-up")))
    before = (transactions(), statements())
    await asyncio.wait_for(worker(FakeDelivery.of(accepted_event("a"))), timeout=5)
    assert (transactions() - before[0], statements() - before[1]) == (1, 2)


async def _backend_of(db: Database) -> int:
    async with db.transaction() as session:
        connection = await session.connection()
        return int((await connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one())


async def test_a_claim_on_a_lost_connection_fails_as_before_and_the_next_one_works(
    postgres: Database, migrated_database_url: str
) -> None:
    """The claim runs on psycopg directly; a connection PostgreSQL closed (a restart) still
    fails it as SQLAlchemy's OperationalError (classed ``database_unavailable``) with the
    connection invalidated, and the pool hands the next transaction a live one."""
    pid = await _backend_of(postgres)
    async with await psycopg.AsyncConnection.connect(migrated_database_url) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(sa_exc.OperationalError) as failure:
        async with postgres.transaction() as session:
            await postgres.claim(session, "lost", [("/src", "evt-lost")])
    assert failure.value.connection_invalidated
    assert classify(failure.value) == DATABASE_UNAVAILABLE
    async with postgres.transaction() as session:
        assert await postgres.claim(session, "lost", [("/src", "evt-lost")]) == {
            ("/src", "evt-lost")
        }


async def test_a_batch_claim_returns_only_new_keys_and_claims_a_repeated_key_once(
    postgres: Database,
) -> None:
    """One statement for many keys: the keys claimed before are left out, a key given
    twice is claimed once, and nothing of another consumer counts."""
    async with postgres.transaction() as session:
        await postgres.claim(session, "other", [("/s", "b")])
        assert await postgres.claim(session, "mine", [("/s", "a")]) == {("/s", "a")}
    async with postgres.transaction() as session:
        claimed = await postgres.claim(
            session, "mine", [("/s", "c"), ("/s", "a"), ("/s", "b"), ("/s", "c")]
        )
    assert claimed == {("/s", "b"), ("/s", "c")}


async def test_an_outbox_row_that_cannot_be_written_fails_as_sqlalchemy_integrity_error(
    postgres: Database,
) -> None:
    """The outbox rows go in on psycopg directly; a duplicate event id still fails the
    commit as SQLAlchemy's IntegrityError (what callers catch), and nothing is written."""
    row = {"event_id": "evt-x", "routing_key": "share.completed", "body": b"{}"}
    with pytest.raises(sa_exc.IntegrityError):
        async with postgres.transaction() as session:
            session.info[STAGED_OUTBOX].extend(
                [{**row, "created_at": utcnow()}, {**row, "created_at": utcnow()}]
            )
    async with postgres.transaction() as session:
        assert (await session.exec(select(OutboxMessage))).all() == []


async def test_a_session_rolled_back_and_used_again_claims_in_its_new_transaction(
    postgres: Database,
) -> None:
    """The claim remembers its transaction's connection; after a rollback the session's
    next transaction claims on its own connection, and that claim is what commits."""
    session = postgres._sessions()
    async with session:
        await postgres.claim(session, "again", [("/s", "first")])
        await session.rollback()
        # The connection just given back goes elsewhere: the session's next one differs.
        async with postgres.engine.connect() as elsewhere:
            await elsewhere.exec_driver_sql("SELECT 1")
            assert await postgres.claim(session, "again", [("/s", "second")]) == {("/s", "second")}
            await session.commit()
    async with postgres.transaction() as check:
        rows = (await check.exec(select(InboxEntry).where(InboxEntry.consumer == "again"))).all()
    assert [row.event_id for row in rows] == ["second"]


async def test_a_claim_abandoned_at_a_timeout_leaves_the_database_usable(
    postgres: Database,
) -> None:
    """A claim waiting on a row another transaction holds, abandoned at the handler
    timeout: a TimeoutError, the holder unharmed, and the next claim of the key works."""
    async with postgres.transaction() as holder:
        await postgres.claim(holder, "held", [("/s", "k")])
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5), postgres.transaction() as waiter:
                await postgres.claim(waiter, "held", [("/s", "k")])
        await holder.rollback()
    async with postgres.transaction() as session:
        assert await postgres.claim(session, "held", [("/s", "k")]) == {("/s", "k")}


# What an array in text form must escape or could misread: quotes and backslashes (every JSON
# entry has them), commas, braces, the word NULL, blanks, an empty string, non-ASCII.
AWKWARD_TEXTS = (
    '{"path": "C:\\\\dir", "said": "a \\"b\\""}',
    "comma, {brace} NULL",
    "NULL",
    "  padded  ",
    "",
    "naïve ✓ \u2028",
)


async def test_rows_written_together_keep_every_character_on_postgres(
    migrated_database_url: str,
) -> None:
    """Several keys, outbox rows and audit rows go in as one array each (sent in binary):
    quotes, backslashes, commas, braces, NULL, blanks, an empty string and non-ASCII text
    come back exactly as given, and a body's every byte value too."""
    db = Database(migrated_database_url, stages_audit=True)
    ids = [f"evt-awkward-{n}-{text}" for n, text in enumerate(AWKWARD_TEXTS)]
    bodies = [bytes(range(256)), b"", *(text.encode() for text in AWKWARD_TEXTS[:4])]
    try:
        async with db.transaction() as session:
            keys = [(text, id_) for text, id_ in zip(AWKWARD_TEXTS, ids, strict=True)]
            assert await db.claim(session, "awkward", keys) == set(keys)
            now = utcnow()
            session.info[STAGED_OUTBOX].extend(
                {"event_id": id_, "routing_key": text, "body": body, "created_at": now}
                for id_, text, body in zip(ids, AWKWARD_TEXTS, bodies, strict=True)
            )
            session.info[STAGED_AUDIT].extend(
                (text, id_, now, text) for id_, text in zip(ids, AWKWARD_TEXTS, strict=True)
            )
        async with await psycopg.AsyncConnection.connect(migrated_database_url) as check:
            inbox = await (
                await check.execute(
                    "SELECT event_source, event_id FROM runtime_inbox WHERE consumer = 'awkward'"
                )
            ).fetchall()
            outbox = await (
                await check.execute(
                    "SELECT event_id, routing_key, body FROM runtime_outbox"
                    " WHERE event_id = ANY(%s)",
                    (ids,),
                )
            ).fetchall()
            staged = await (
                await check.execute(
                    "SELECT event_source, event_id, entry"
                    f" FROM {AUDIT_SCHEMA}.{AUDIT_STAGING_TABLE} WHERE event_id = ANY(%s)",
                    (ids,),
                )
            ).fetchall()
    finally:
        await db.dispose()
    assert sorted(inbox) == sorted(keys)
    assert sorted((id_, key, bytes(body)) for id_, key, body in outbox) == sorted(
        zip(ids, AWKWARD_TEXTS, bodies, strict=True)
    )
    assert sorted(staged) == sorted(
        (text, id_, text) for id_, text in zip(ids, AWKWARD_TEXTS, strict=True)
    )


async def test_a_process_holding_every_prefetched_delivery_at_once_reuses_its_connections(
    migrated_database_url: str,
) -> None:
    """A worker without group commit (the notifier) runs as many transactions at once as
    it has deliveries in flight, and the sweep one more: the process's pool keeps that
    many connections, so a second wave opens no new connection (no new backend)."""
    settings = Settings()
    db = Database(migrated_database_url, pool_size=settings.database_pool_size)
    opened: list[object] = []
    event.listen(db.engine.sync_engine.pool, "connect", lambda *_: opened.append(None))

    async def hold(all_in: asyncio.Barrier) -> None:
        async with db.transaction() as session:
            await session.connection()  # held until every transaction holds one
            await all_in.wait()

    try:
        for wave in range(2):
            all_in = asyncio.Barrier(settings.database_pool_size)
            await asyncio.wait_for(
                asyncio.gather(*(hold(all_in) for _ in range(settings.database_pool_size))),
                timeout=10,
            )
            if wave == 0:
                assert len(opened) == settings.database_pool_size
    finally:
        await db.dispose()
    assert len(opened) == settings.database_pool_size
