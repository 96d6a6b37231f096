"""The audit_sink worker through the shared pipeline: it hears every event and records it once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import blume_audit_sink as audit_sink
import pytest
from blume_audit_sink.models import AuditRecord
from blume_audit_sink.sealer import pending_count, seal_all, seal_batch
from blume_audit_sink.service import NAME, build
from blume_audit_sink.verify import verify
from blume_contracts.audit_entry import prepare
from blume_runtime.db import Database
from blume_runtime.outbox import OutboxRelay
from blume_runtime.settings import Settings
from blume_runtime.testing import FakeDelivery
from blume_runtime.transport import InMemoryTransport
from blume_runtime.unit_of_work import stage_for_audit
from blume_runtime.worker import Worker
from pydantic import SecretStr
from sqlalchemy import event as sa_event
from sqlmodel import col, select

TENANT = "demo-hospital"
SHARE_ID = "shr_" + "a" * 32


def delivery_of(event: Any) -> FakeDelivery:
    return FakeDelivery.of(event)


@pytest.fixture
async def worker(sqlite_db: Database, tmp_path: Any) -> AsyncIterator[Worker]:
    """The sink's worker on the embedded default, its sealer running (as the runtime starts
    it) and stopped afterwards."""
    # The sealer opens its own engine on the same database as the worker.
    settings = Settings(state_dir=tmp_path / "state", database_url=SecretStr(sqlite_db.url))
    service = build(settings)
    for component in service.components:
        await component.start()
    yield Worker(service, sqlite_db, OutboxRelay(sqlite_db, InMemoryTransport()))
    for component in service.components:
        await component.stop()


async def stored_records(db: Database) -> list[AuditRecord]:
    async with db.transaction() as session:
        statement = select(AuditRecord).order_by(col(AuditRecord.chain_id), col(AuditRecord.seq))
        return list((await session.exec(statement)).all())


def test_queue_is_the_audit_sinks(tmp_path: Any) -> None:
    """The worker's queue is blume.share.audit_sink."""
    service = build(Settings(state_dir=tmp_path / "state"))
    assert service.name == NAME == "audit_sink"
    assert service.queue.name == "blume.share.audit_sink"


@pytest.mark.parametrize("event_type", ["study.send.requested", "share.link.issued", "x.unknown"])
def test_every_event_type_reaches_the_handler_unvalidated(tmp_path: Any, event_type: str) -> None:
    """Known and unknown types route to the one handler, with no data model to reject them."""
    route = build(Settings(state_dir=tmp_path / "state")).route(event_type)
    assert route is not None
    model, _handler = route
    assert model is None


async def test_a_redelivered_event_is_recorded_once(
    worker: Worker, sqlite_db: Database, make_event: Any
) -> None:
    """Delivering the same message twice acknowledges both and leaves one record."""
    event = make_event("share.accepted", {"share_id": "shr_" + "a" * 32}, tenant=TENANT)
    first, again = delivery_of(event), delivery_of(event)
    await worker(first)
    await worker(again)
    await seal_all(sqlite_db)

    assert (first.settlement, again.settlement) == ("ack", "ack")
    records = await stored_records(sqlite_db)
    assert [(r.chain_id, r.seq, r.event_id) for r in records] == [(TENANT, 1, event.id)]


async def test_a_request_that_breaks_its_contract_is_recorded(
    worker: Worker, sqlite_db: Database, make_event: Any
) -> None:
    """A study.send.requested the dispatcher would reject is still audited, not dead-lettered."""
    broken = {"method": "carrier-pigeon", "tenant_id": TENANT, "study": "not an object"}
    delivery = delivery_of(make_event("study.send.requested", broken, tenant=TENANT))
    await worker(delivery)
    await seal_all(sqlite_db)

    assert delivery.settlement == "ack"
    (record,) = await stored_records(sqlite_db)
    assert record.event_type == "study.send.requested"
    assert json.loads(record.payload) == broken
    async with sqlite_db.transaction() as session:
        assert (await verify(session)).ok


async def test_a_staged_event_waits_until_sealing_chains_it(
    sqlite_db: Database, make_event: Any
) -> None:
    """A staged event waits in audit_pending; sealing moves it into the chain, once.

    Staged directly rather than through the worker: the worker wakes the background
    sealer, which would race this test for the event.
    """
    event = make_event("share.accepted", {"share_id": "shr_" + "a" * 32}, tenant=TENANT)
    async with sqlite_db.transaction() as session:
        assert stage_for_audit(session, event)
    async with sqlite_db.transaction() as session:
        assert await pending_count(session) == 1

    assert await seal_all(sqlite_db) == 1
    assert await seal_all(sqlite_db) == 0
    async with sqlite_db.transaction() as session:
        assert await pending_count(session) == 0
    assert [r.event_id for r in await stored_records(sqlite_db)] == [event.id]


async def test_the_worker_wakes_the_sealer_which_chains_the_event(
    worker: Worker, sqlite_db: Database, make_event: Any
) -> None:
    """A handled event is chained by the background sealer without anyone calling seal_all."""
    event = make_event("share.accepted", {"share_id": "shr_" + "a" * 32}, tenant=TENANT)
    await worker(delivery_of(event))
    for _ in range(200):
        if [r.event_id for r in await stored_records(sqlite_db)] == [event.id]:
            break
        await asyncio.sleep(0.05)
    assert [r.event_id for r in await stored_records(sqlite_db)] == [event.id]
    async with sqlite_db.transaction() as session:
        assert await pending_count(session) == 0


@pytest.mark.parametrize("event_type", ["study.send.requested", "share.accepted"])
async def test_a_share_is_seen_from_staging_on(
    sqlite_db: Database, make_event: Any, request_body: Any, event_type: str
) -> None:
    """share_seen answers for a staged event and a sealed one; no other id matches it."""
    data = request_body() if event_type == "study.send.requested" else {"share_id": SHARE_ID}
    event = make_event(event_type, data, tenant=TENANT)
    share_id = prepare(event).share_id
    assert share_id is not None
    others = ["shr_" + "0" * 32, share_id[:-1], "shr_%", "%"]
    async with sqlite_db.transaction() as session:
        assert not await audit_sink.share_seen(session, share_id)
        assert stage_for_audit(session, event)
    for sealed in (False, True):
        if sealed:
            await seal_all(sqlite_db)
        async with sqlite_db.transaction() as session:
            assert await pending_count(session) == (0 if sealed else 1)
            assert await audit_sink.share_seen(session, share_id)
            assert [await audit_sink.share_seen(session, other) for other in others] == [
                False
            ] * len(others)


async def test_an_event_staged_again_after_sealing_is_not_chained_twice(
    sqlite_db: Database, make_event: Any
) -> None:
    """A redelivery that reaches staging after the first copy was sealed is dropped at sealing."""
    event = make_event("share.accepted", {"share_id": "shr_" + "a" * 32}, tenant=TENANT)
    for _ in range(2):
        async with sqlite_db.transaction() as session:
            assert stage_for_audit(session, event)
            assert stage_for_audit(session, event)  # the same copy twice: one staged row
        await seal_all(sqlite_db)
    assert [(r.seq, r.event_id) for r in await stored_records(sqlite_db)] == [(1, event.id)]


async def test_events_staged_in_one_transaction_are_written_in_one_statement(
    sqlite_db: Database, make_event: Any
) -> None:
    """Three events staged in one transaction (a group commit) cost one INSERT, at the commit."""
    events = [
        make_event("share.accepted", {"share_id": f"shr_{n:032x}"}, tenant=TENANT) for n in range(3)
    ]
    written: list[tuple[str, bool]] = []

    def remember(
        _conn: Any, _cursor: Any, statement: str, _params: Any, _ctx: Any, executemany: bool
    ) -> None:
        written.append((statement, executemany))

    sa_event.listen(sqlite_db.engine.sync_engine, "before_cursor_execute", remember)
    try:
        async with sqlite_db.transaction() as session:
            for event in events:
                assert stage_for_audit(session, event)
            assert written == []
    finally:
        sa_event.remove(sqlite_db.engine.sync_engine, "before_cursor_execute", remember)
    staging = [(statement, many) for statement, many in written if "audit_pending" in statement]
    assert len(staging) == 1
    assert staging[0][1]  # every row in that one statement
    await seal_all(sqlite_db)
    assert [r.event_id for r in await stored_records(sqlite_db)] == [e.id for e in events]


async def test_a_rolled_back_transaction_stages_nothing(
    sqlite_db: Database, make_event: Any
) -> None:
    """Events staged in a transaction that rolls back are not written, then or later."""
    event = make_event("share.accepted", {"share_id": SHARE_ID}, tenant=TENANT)

    async def failing_handler() -> None:
        async with sqlite_db.transaction() as session:
            assert stage_for_audit(session, event)
            raise RuntimeError("the handler failed")

    with pytest.raises(RuntimeError):
        await failing_handler()
    async with sqlite_db.transaction() as session:
        assert await pending_count(session) == 0
    assert await seal_all(sqlite_db) == 0


async def test_seals_in_batches_in_staging_order(sqlite_db: Database, make_event: Any) -> None:
    """Seven staged events sealed three at a time keep their order and one gapless chain."""
    events = [
        make_event("share.accepted", {"share_id": f"shr_{n:032x}"}, tenant=TENANT) for n in range(7)
    ]
    for event in events:
        async with sqlite_db.transaction() as session:
            assert stage_for_audit(session, event)
    taken = [await seal_batch(sqlite_db, 3) for _ in range(4)]
    assert taken == [3, 3, 1, 0]
    records = await stored_records(sqlite_db)
    assert [(r.seq, r.event_id) for r in records] == [(n + 1, e.id) for n, e in enumerate(events)]
    async with sqlite_db.transaction() as session:
        assert (await verify(session)).ok


async def test_stopping_the_worker_seals_and_signs_what_is_left(
    sqlite_db: Database, make_event: Any, tmp_path: Any
) -> None:
    """The sealer's close (run at shutdown) chains staged events and writes a checkpoint file."""
    state = tmp_path / "state"
    service = build(Settings(state_dir=state, database_url=SecretStr(sqlite_db.url)))
    for component in service.components:
        await component.start()
    worker = Worker(service, sqlite_db, OutboxRelay(sqlite_db, InMemoryTransport()))
    for number in range(3):
        event = make_event("share.accepted", {"share_id": f"shr_{number:032x}"}, tenant=TENANT)
        await worker(delivery_of(event))
    for component in service.components:
        await component.stop()

    assert [r.seq for r in await stored_records(sqlite_db)] == [1, 2, 3]
    (signed,) = (state / "audit-checkpoints" / TENANT).glob("*.json")
    assert json.loads(signed.read_text())["payload"]["seq"] == 3


def test_the_sink_binds_only_what_no_producer_stages_unless_it_records_copies(
    tmp_path: Any,
) -> None:
    """By default the sink's queue binds the requests and the operators' tools' events, and
    the unrouted exchange; with ``BLUME_AUDIT_COPIES`` (some service's database is not the
    sink's, so it cannot stage its events) it binds every type (``#``)."""
    queue = build(Settings(state_dir=tmp_path)).queue
    assert sorted(queue.binding_keys) == [
        "ops.dead_letters.purged",
        "ops.dead_letters.replayed",
        "share.revoke.requested",
        "study.send.requested",
    ]
    assert queue.binds_unrouted
    assert build(Settings(state_dir=tmp_path, audit_copies=True)).queue.binding_keys == ("#",)
