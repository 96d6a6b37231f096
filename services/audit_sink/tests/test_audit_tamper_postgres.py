"""Tampering on real PostgreSQL, done as a superuser would, with raw SQL behind the sink's back.

The database refuses UPDATE, DELETE and TRUNCATE on the audit tables even to a superuser
(migration 0002), so each tampering here first turns the triggers off for its session
(``session_replication_role = replica``), as only a superuser can. Each test appends to two
tenants' chains, checks that verify passes, tampers with one chain and checks that verify
names exactly the broken chain and sequence numbers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from blume_audit_sink.append import append_entries
from blume_audit_sink.hashing import hashed_fields, record_hash
from blume_audit_sink.models import AuditChainHead, AuditRecord
from blume_audit_sink.problems import ProblemKind
from blume_audit_sink.sealer import pending_count, seal_all
from blume_audit_sink.verify import VerifyReport
from blume_audit_sink.verify import verify as verify_chains
from blume_contracts.audit_entry import prepare
from blume_contracts.envelope import RawEvent
from blume_runtime.db import Database
from blume_runtime.unit_of_work import stage_for_audit
from psycopg import sql
from sqlmodel import col, select

pytestmark = pytest.mark.integration

TAMPERED = "demo-hospital"
UNTOUCHED = "north-clinic"
TAMPERED_EVENTS = 10
UNTOUCHED_EVENTS = 3

Tamper = Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]
Expected = set[tuple[str, int, ProblemKind]]


@pytest.fixture
async def database(migrated_database_url: str) -> AsyncIterator[Database]:
    """The sink's engine on a fresh database whose sessions run in Toronto time.

    A non-UTC session time zone shows that timestamps hash the same after the round trip.
    """
    name = urlsplit(migrated_database_url).path.lstrip("/")
    async with await psycopg.AsyncConnection.connect(
        migrated_database_url, autocommit=True
    ) as admin:
        await admin.execute(
            sql.SQL("ALTER DATABASE {} SET timezone = 'America/Toronto'").format(
                sql.Identifier(name)
            )
        )
    db = Database(migrated_database_url, stages_audit=True)
    yield db
    await db.dispose()


async def verify(db: Database) -> VerifyReport:
    async with db.transaction() as session:
        return await verify_chains(session)


@pytest.fixture
async def audited(database: Database, make_event: Any) -> Database:
    """Ten events for one tenant interleaved with three for another; verify passes."""
    toronto = timezone(timedelta(hours=-5))
    for number in range(1, TAMPERED_EVENTS + 1):
        event = make_event(
            "share.accepted",
            {"share_id": f"shr_{number:032x}", "note": "Montréal"},
            tenant=TAMPERED,
            time=datetime(2026, 11, 20, 4, number, 0, 250_000 * (number % 4), tzinfo=toronto),
        )
        async with database.transaction() as session:
            assert await append_entries(session, [prepare(event)])
        if number <= UNTOUCHED_EVENTS:
            other = make_event("share.completed", {"share_id": "x"}, tenant=UNTOUCHED)
            async with database.transaction() as session:
                assert await append_entries(session, [prepare(other)])

    report = await verify(database)
    assert report.ok, report.problems
    assert (report.checked, report.chains) == (TAMPERED_EVENTS + UNTOUCHED_EVENTS, 2)
    return database


async def tamper(db: Database, change: Tamper) -> None:
    """Run ``change`` as the superuser with the audit tables' triggers off."""
    url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as superuser:
        await superuser.execute("SET session_replication_role = replica")
        await change(superuser)


async def row(connection: psycopg.AsyncConnection[Any], seq: int) -> dict[str, Any]:
    cursor = connection.cursor(row_factory=psycopg.rows.dict_row)
    await cursor.execute(
        "SELECT * FROM audit_records WHERE chain_id = %s AND seq = %s", (TAMPERED, seq)
    )
    found = await cursor.fetchone()
    assert found is not None
    return found


async def insert_row(connection: psycopg.AsyncConnection[Any], values: dict[str, Any]) -> None:
    columns = sql.SQL(", ").join(map(sql.Identifier, values))
    placeholders = sql.SQL(", ").join(sql.Placeholder() * len(values))
    await connection.execute(
        sql.SQL("INSERT INTO audit_records ({}) VALUES ({})").format(columns, placeholders),
        list(values.values()),
    )


def forged_after(previous: dict[str, Any], seq: int) -> dict[str, Any]:
    """A forged record with a correct link and a correct hash: the forger knows the formula."""
    forged = {
        **previous,
        "seq": seq,
        "event_id": "forged-event",
        "event_type": "share.revoked",
        "payload": '{"share_id":"shr_forged"}',
        "prev_hash": previous["hash"],
    }
    forged["hash"] = record_hash(forged["prev_hash"], hashed_fields(forged))
    return forged


async def edit_payload(connection: psycopg.AsyncConnection[Any]) -> None:
    await connection.execute(
        'UPDATE audit_records SET payload = \'{"share_id":"shr_other"}\' '
        "WHERE chain_id = %s AND seq = 4",
        (TAMPERED,),
    )


async def edit_payload_and_rehash(connection: psycopg.AsyncConnection[Any]) -> None:
    edited = {**await row(connection, 4), "payload": "{}"}
    await connection.execute(
        "UPDATE audit_records SET payload = %s, hash = %s WHERE chain_id = %s AND seq = 4",
        ("{}", record_hash(edited["prev_hash"], hashed_fields(edited)), TAMPERED),
    )


async def edit_occurred_at(connection: psycopg.AsyncConnection[Any]) -> None:
    await connection.execute(
        "UPDATE audit_records SET occurred_at = occurred_at - interval '1 day' "
        "WHERE chain_id = %s AND seq = 7",
        (TAMPERED,),
    )


async def delete_middle_row(connection: psycopg.AsyncConnection[Any]) -> None:
    await connection.execute(
        "DELETE FROM audit_records WHERE chain_id = %s AND seq = 5", (TAMPERED,)
    )


async def forge_row_at_tail(connection: psycopg.AsyncConnection[Any]) -> None:
    await insert_row(connection, forged_after(await row(connection, 10), 11))


async def forge_row_in_the_middle(connection: psycopg.AsyncConnection[Any]) -> None:
    # Make room at seq 6 by renumbering the rest, then point the head at the new end.
    previous = await row(connection, 5)
    for offset in (1000, -999):
        await connection.execute(
            "UPDATE audit_records SET seq = seq + %s WHERE chain_id = %s AND seq >= 6",
            (offset, TAMPERED),
        )
    await insert_row(connection, forged_after(previous, 6))
    await connection.execute(
        "UPDATE audit_chain_heads SET seq = 11 WHERE chain_id = %s", (TAMPERED,)
    )


async def swap_two_rows(connection: psycopg.AsyncConnection[Any]) -> None:
    for old, new in ((3, -1), (4, 3), (-1, 4)):
        await connection.execute(
            "UPDATE audit_records SET seq = %s WHERE chain_id = %s AND seq = %s",
            (new, TAMPERED, old),
        )


async def truncate_tail(connection: psycopg.AsyncConnection[Any]) -> None:
    await connection.execute(
        "DELETE FROM audit_records WHERE chain_id = %s AND seq > 8", (TAMPERED,)
    )


async def edit_head(connection: psycopg.AsyncConnection[Any]) -> None:
    await connection.execute(
        "UPDATE audit_chain_heads SET hash = %s WHERE chain_id = %s", ("e" * 64, TAMPERED)
    )


async def delete_head(connection: psycopg.AsyncConnection[Any]) -> None:
    await connection.execute("DELETE FROM audit_chain_heads WHERE chain_id = %s", (TAMPERED,))


async def delete_every_row(connection: psycopg.AsyncConnection[Any]) -> None:
    await connection.execute("DELETE FROM audit_records WHERE chain_id = %s", (TAMPERED,))


HM, BL, GAP = ProblemKind.HASH_MISMATCH, ProblemKind.BROKEN_LINK, ProblemKind.SEQ_GAP
HEAD = ProblemKind.HEAD_MISMATCH

TAMPERING: dict[str, tuple[Tamper, Expected]] = {
    "edit-payload": (edit_payload, {(TAMPERED, 4, HM)}),
    "edit-payload-and-rehash": (edit_payload_and_rehash, {(TAMPERED, 5, BL)}),
    "edit-occurred-at": (edit_occurred_at, {(TAMPERED, 7, HM)}),
    "delete-middle-row": (delete_middle_row, {(TAMPERED, 6, GAP), (TAMPERED, 6, BL)}),
    "forge-row-at-tail": (forge_row_at_tail, {(TAMPERED, 11, HEAD)}),
    "forge-row-in-the-middle": (
        forge_row_in_the_middle,
        {(TAMPERED, 7, BL)} | {(TAMPERED, seq, HM) for seq in range(7, 12)},
    ),
    "swap-two-rows": (
        swap_two_rows,
        {(TAMPERED, 3, BL), (TAMPERED, 3, HM), (TAMPERED, 4, BL), (TAMPERED, 4, HM)}
        | {(TAMPERED, 5, BL)},
    ),
    "truncate-tail": (truncate_tail, {(TAMPERED, 9, HEAD)}),
    "edit-head": (edit_head, {(TAMPERED, 10, HEAD)}),
    "delete-head": (delete_head, {(TAMPERED, 10, ProblemKind.MISSING_HEAD)}),
    "delete-every-row": (delete_every_row, {(TAMPERED, 1, HEAD)}),
}


@pytest.mark.parametrize(("change", "expected"), TAMPERING.values(), ids=TAMPERING.keys())
async def test_verify_names_the_tampered_chain_and_seq(
    audited: Database, change: Tamper, expected: Expected
) -> None:
    """After the tampering, verify fails and reports exactly the broken chain and seqs."""
    await tamper(audited, change)

    report = await verify(audited)
    assert not report.ok
    assert {(p.chain_id, p.seq, p.kind) for p in report.problems} == expected
    assert len(report.problems) == len(expected)


async def test_problem_details_name_hashes_not_data(audited: Database) -> None:
    """An edited row's detail gives the stored and recomputed hashes and none of the data."""
    await tamper(audited, edit_payload)

    (problem,) = (await verify(audited)).problems
    async with audited.transaction() as session:
        stored = (
            await session.exec(
                select(AuditRecord).where(
                    col(AuditRecord.chain_id) == TAMPERED, col(AuditRecord.seq) == 4
                )
            )
        ).one()
    recomputed = record_hash(stored.prev_hash, hashed_fields(stored.model_dump()))
    assert stored.hash in problem.detail
    assert recomputed in problem.detail
    assert "shr_other" not in problem.detail
    assert "Montréal" not in problem.detail


async def test_verify_of_one_chain_ignores_the_other(audited: Database) -> None:
    """Verifying the untouched tenant passes even though the other tenant's chain is broken."""
    await tamper(audited, delete_middle_row)

    async with audited.transaction() as session:
        untouched = await verify_chains(session, UNTOUCHED)
        tampered = await verify_chains(session, TAMPERED)
    assert (untouched.ok, untouched.checked, untouched.chains) == (True, UNTOUCHED_EVENTS, 1)
    assert not tampered.ok
    assert {p.chain_id for p in tampered.problems} == {TAMPERED}


async def test_concurrent_appends_to_a_new_chain_stay_gapless(
    database: Database, make_event: Any
) -> None:
    """Twenty appends racing on one new tenant get seq 1..20, linked, and the chain verifies."""
    events = [
        make_event("share.accepted", {"share_id": f"shr_{n:032x}"}, tenant=TAMPERED)
        for n in range(20)
    ]

    async def append_alone(event: Any) -> None:
        async with database.transaction() as session:
            assert await append_entries(session, [prepare(event)])

    await asyncio.gather(*(append_alone(event) for event in events))

    async with database.transaction() as session:
        records = (await session.exec(select(AuditRecord).order_by(col(AuditRecord.seq)))).all()
    assert [r.seq for r in records] == list(range(1, 21))
    assert {r.event_id for r in records} == {e.id for e in events}
    report = await verify(database)
    assert (report.ok, report.checked) == (True, 20)


async def test_timestamps_read_back_in_another_zone_still_verify(audited: Database) -> None:
    """With the session in Toronto time, timestamps still come back as the same UTC instants."""
    async with audited.transaction() as session:
        first = (
            await session.exec(
                select(AuditRecord).where(
                    col(AuditRecord.chain_id) == TAMPERED, col(AuditRecord.seq) == 1
                )
            )
        ).one()
    assert first.occurred_at.utcoffset() == timedelta(0)
    assert first.occurred_at == datetime(2026, 11, 20, 9, 1, 0, 250_000, tzinfo=UTC)
    assert (await verify(audited)).ok


async def test_verify_while_the_sink_appends_reports_nothing(
    database: Database, make_event: Any
) -> None:
    """Verifying under a stream of appends never mistakes a fresh append for tampering."""
    events = [
        make_event("share.accepted", {"share_id": f"shr_{n:032x}"}, tenant=tenant)
        for n in range(40)
        for tenant in (TAMPERED, UNTOUCHED)
    ]
    appending = True

    async def append_all() -> None:
        nonlocal appending
        for event in events:
            async with database.transaction() as session:
                await append_entries(session, [prepare(event)])
        appending = False

    async def verify_repeatedly() -> list[VerifyReport]:
        reports = []
        while appending:
            reports.append(await verify(database))
        return reports

    _, reports = await asyncio.gather(append_all(), verify_repeatedly())
    assert reports
    assert [p for report in reports for p in report.problems] == []
    assert (await verify(database)).checked == len(events)


async def test_batches_written_by_copy_chain_inherit_and_verify(
    database: Database, life: Any
) -> None:
    """Batches large enough for COPY, over two new tenants, chain gaplessly and verify.

    The later events of each share inherit their share's patient from the request, stored in
    an earlier batch (one look-up for both chains); an event already recorded, or given twice
    in a batch, is written once; each head ends on its chain's last record.
    """
    lives = [
        life(tenant=tenant, mrn=f"MRN-{tenant[:5]}-{number}")
        for number in range(20)
        for tenant in (TAMPERED, UNTOUCHED)
    ]
    requests = [prepare(events[0]) for events in lives]
    later = [prepare(event) for events in lives for event in events[1:]]
    async with database.transaction() as session:
        assert len(await append_entries(session, requests)) == len(requests)
    async with database.transaction() as session:
        written = await append_entries(session, [requests[0], later[0], *later])
    assert len(written) == len(later)

    async with database.transaction() as session:
        records = (await session.exec(select(AuditRecord))).all()
        heads = (await session.exec(select(AuditChainHead))).all()
    by_share: dict[str, set[str | None]] = {}
    for record in records:
        by_share.setdefault(str(record.share_id), set()).add(record.patient_mrn)
    assert len(by_share) == len(lives)
    assert all(len(mrns) == 1 and None not in mrns for mrns in by_share.values())
    for tenant in (TAMPERED, UNTOUCHED):
        seqs = sorted(r.seq for r in records if r.chain_id == tenant)
        assert seqs == list(range(1, len(records) // 2 + 1))
    last = {r.chain_id: r for r in records if r.seq == len(records) // 2}
    assert {h.chain_id: (h.seq, h.hash) for h in heads} == {
        chain: (record.seq, record.hash) for chain, record in last.items()
    }
    report = await verify(database)
    assert (report.ok, report.checked) == (True, len(records))


async def sealed_one_after_another(
    database: Database, batches: Sequence[Sequence[RawEvent]]
) -> list[AuditRecord]:
    """Each batch staged in one transaction and sealed before the next is staged; then the
    store's records in order, once nothing is left staged."""
    for batch in batches:
        async with database.transaction() as session:
            for event in batch:
                assert stage_for_audit(session, event)
        assert await seal_all(database) == len(batch)
    async with database.transaction() as session:
        records = (await session.exec(select(AuditRecord).order_by(col(AuditRecord.seq)))).all()
        assert await pending_count(session) == 0
    return list(records)


async def test_an_event_staged_again_after_sealing_is_sealed_once(
    database: Database, make_event: Any
) -> None:
    """On PostgreSQL, a copy staged again after the first was sealed is dropped by the sealer,
    and its neighbours in the batch are still chained."""
    again = make_event("share.accepted", {"share_id": "shr_" + "d" * 32}, tenant=TAMPERED)
    fresh = make_event("share.accepted", {"share_id": "shr_" + "e" * 32}, tenant=TAMPERED)
    records = await sealed_one_after_another(database, [[again], [again, fresh]])
    assert [(r.seq, r.event_id) for r in records] == [(1, again.id), (2, fresh.id)]
    assert (await verify(database)).ok


async def test_a_copy_staged_again_in_a_copied_batch_is_sealed_once(
    database: Database, make_event: Any
) -> None:
    """A batch large enough to be written with COPY, holding a copy of an event sealed in an
    earlier batch: the store refuses the copy, the batch is chained again with the store's
    check, and every other event of it is chained once, in order."""
    first, second = (
        [
            make_event("share.accepted", {"share_id": f"shr_{n:032x}"}, tenant=TAMPERED)
            for n in numbers
        ]
        for numbers in (range(40), range(40, 80))
    )
    records = await sealed_one_after_another(
        database, [first, [*second[:20], first[7], *second[20:]]]
    )
    assert [r.event_id for r in records] == [event.id for event in (*first, *second)]
    assert [r.seq for r in records] == list(range(1, 81))
    assert (await verify(database)).ok
