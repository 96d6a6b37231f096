"""Producers stage their own events' audit rows; the sealer chains them, vetting each row.

A staged entry is written by whichever service emitted the event, so the sealer cannot
assume it is well formed: a bad one is chained as a security record, and never stalls the
batch it is in. On PostgreSQL, a row staged by another process wakes the sealer by NOTIFY.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from blume_audit_sink import sealer
from blume_audit_sink.models import AuditRecord
from blume_audit_sink.sealer import SealedRequests, pending_count, seal_all
from blume_audit_sink.staging_roles import MALFORMED
from blume_audit_sink.verify import verify
from blume_contracts.artefacts import EXAMPLES_DIR
from blume_contracts.audit_catalog import UNTRUSTED_PRODUCER_TYPE
from blume_contracts.audit_entry import SECURITY_CHAIN, prepare
from blume_contracts.registry import spec_for
from blume_runtime.db import Database
from blume_runtime.unit_of_work import UnitOfWork, stage_for_audit
from sqlalchemy import text
from sqlmodel import select

from .test_audit_service import TENANT, stored_records
from .test_sealer_wakes import WOKEN_WITHIN_SECONDS, sealer_on


def _entry(make_event: Any, share: str, **changes: Any) -> str:
    """A staged entry as a producer writes it, with ``changes`` made to its fields."""
    event = make_event("share.accepted", {"share_id": share}, tenant=TENANT)
    values = json.loads(prepare(event).to_json())
    values.update(changes)
    return json.dumps(values)


def _example(event_type: str) -> Any:
    return json.loads((EXAMPLES_DIR / f"{event_type}.json").read_text())["data"]


MALFORMED_ENTRIES = {
    "not JSON": lambda make_event: "{not json",
    "not an object": lambda make_event: "[1, 2]",
    "no fields": lambda make_event: "{}",
    "a field missing": lambda make_event: json.dumps(
        {k: v for k, v in json.loads(_entry(make_event, "shr_1")).items() if k != "agents"}
    ),
    "a field too many": lambda make_event: _entry(make_event, "shr_2", seq=7),
    "a NUL in the chain": lambda make_event: _entry(make_event, "shr_3", chain_id="a\x00b"),
    "an overlong type": lambda make_event: _entry(make_event, "shr_4", event_type="x" * 129),
    "a number for text": lambda make_event: _entry(make_event, "shr_5", event_id=12),
    "a naive time": lambda make_event: _entry(
        make_event, "shr_6", occurred_at=datetime(2026, 1, 1).isoformat()
    ),
    "a null event id": lambda make_event: _entry(make_event, "shr_7", event_id=None),
}


async def _stage_raw(db: Database, entries: list[str]) -> None:
    """Stage entries as rows, as a producer's INSERT writes them."""
    async with db.transaction() as session:
        connection = await session.connection()
        for number, entry in enumerate(entries):
            await connection.execute(
                text(
                    "INSERT INTO audit_pending (event_source, event_id, received_at, entry) "
                    "VALUES (:source, :id, :at, :entry)"
                ),
                {"source": "/raw", "id": f"raw-{number}", "at": datetime.now(UTC), "entry": entry},
            )


async def test_a_malformed_staged_entry_is_sealed_as_a_security_record_beside_good_ones(
    sqlite_db: Database, make_event: Any
) -> None:
    """Each kind of malformed entry, staged between good ones in one batch, is chained as a
    security record (refusal ``malformed_staged_entry``, in the security chain); the good
    entries are chained as themselves, nothing is left staged, and the chains verify."""
    good = [_entry(make_event, f"shr_good_{n}") for n in range(2)]
    bad = [make(make_event) for make in MALFORMED_ENTRIES.values()]
    await _stage_raw(sqlite_db, [good[0], *bad, good[1]])

    assert await seal_all(sqlite_db) == len(bad) + 2
    records = await stored_records(sqlite_db)
    genuine = [r for r in records if r.chain_id == TENANT]
    security = [r for r in records if r.chain_id == SECURITY_CHAIN]
    assert [r.event_id for r in genuine] == [json.loads(g)["event_id"] for g in good]
    assert len(security) == len(bad)
    assert {r.event_type for r in security} == {UNTRUSTED_PRODUCER_TYPE}
    assert {json.loads(r.payload)["refusal"] for r in security} == {MALFORMED}
    async with sqlite_db.transaction() as session:
        assert await pending_count(session) == 0
        assert (await verify(session)).ok


@pytest.mark.integration
async def test_a_row_staged_by_another_process_wakes_the_sealer_by_notify(
    migrated_database_url: str, make_event: Any
) -> None:
    """A sleeping sealer on PostgreSQL (fallback round 30 s) chains a row staged on a plain
    connection of its own, which no in-process wake-up announces, within
    WOKEN_WITHIN_SECONDS: the staging table's trigger notified it at commit."""
    db = Database(migrated_database_url, schema="audit_sink")
    sealer = sealer_on(db, 30.0)
    await sealer.start()
    try:
        await asyncio.sleep(1.0)  # past its first round, listening
        entry = _entry(make_event, "shr_notified")
        with psycopg.connect(migrated_database_url) as producer:
            producer.execute(
                "INSERT INTO audit_sink.audit_pending (event_source, event_id, received_at, "
                "entry) VALUES (%s, %s, now(), %s)",
                (json.loads(entry)["event_source"], json.loads(entry)["event_id"], entry),
            )
        committed = time.monotonic()
        while time.monotonic() - committed < WOKEN_WITHIN_SECONDS:
            async with db.transaction() as session:
                found = (await session.exec(select(AuditRecord.event_id))).all()
            if found:
                break
            await asyncio.sleep(0.05)
        assert found == [json.loads(entry)["event_id"]]
    finally:
        await sealer.stop()
        await db.dispose()


async def test_an_emitted_event_is_staged_with_its_outbox_row_and_only_if_committed(
    sqlite_db: Database, make_event: Any
) -> None:
    """``UnitOfWork.emit`` in a database that stages audit rows stages the event's entry in
    the same transaction as its outbox row: a rolled-back transaction stages nothing, a
    committed one is sealed as the event itself; an outside type (a request) is not staged."""
    data = spec_for("share.accepted").model.model_validate(_example("share.accepted"))

    async def rolled_back() -> None:
        async with sqlite_db.transaction() as session:
            UnitOfWork(service="share_dispatcher", session=session).emit(
                "share.accepted", data, tenantid=TENANT, correlationid="c-1"
            )
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await rolled_back()
    async with sqlite_db.transaction() as session:
        assert await pending_count(session) == 0
        emitted = UnitOfWork(service="share_dispatcher", session=session).emit(
            "share.accepted", data, tenantid=TENANT, correlationid="c-1"
        )
        UnitOfWork(service="access_gateway", session=session).emit(
            "study.send.requested",
            spec_for("study.send.requested").model.model_validate(_example("study.send.requested")),
            tenantid=TENANT,
            correlationid="c-2",
        )
    assert await seal_all(sqlite_db) == 1
    [record] = await stored_records(sqlite_db)
    assert (record.event_id, record.event_source, record.event_type) == (
        emitted.id,
        "/blume-share/share_dispatcher",
        "share.accepted",
    )


async def test_a_request_staged_again_after_it_was_sealed_is_dropped_without_a_second_pass(
    sqlite_db: Database, make_event: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request is staged by each consumer and by the sink: a copy staged after the first was
    sealed is dropped as it is taken (the sealer remembers the requests it sealed), not by
    rolling the batch back and chaining it again asking the store about every row; the store
    holds the request once, and an event in the same batch is chained."""
    request = make_event("study.send.requested", _example("study.send.requested"), tenant=TENANT)
    requests = SealedRequests()
    async with sqlite_db.transaction() as session:
        assert stage_for_audit(session, request)
    assert await seal_all(sqlite_db, requests=requests) == 1

    passes: list[bool] = []
    take = sealer._take_staged

    async def counted_take(session: Any, batch_size: int, *, ask_store: bool) -> Any:
        passes.append(ask_store)
        return await take(session, batch_size, ask_store=ask_store)

    monkeypatch.setattr(sealer, "_take_staged", counted_take)
    accepted = make_event("share.accepted", _example("share.accepted"), tenant=TENANT)
    async with sqlite_db.transaction() as session:
        assert stage_for_audit(session, request)  # the copy that arrived late
        assert stage_for_audit(session, accepted)
    assert await seal_all(sqlite_db, requests=requests) == 2
    assert passes == [False, False]  # the batch, then the empty take that ends the loop
    records = await stored_records(sqlite_db)
    assert [r.event_id for r in records] == [request.id, accepted.id]
