"""The hash chain on the embedded SQLite store: append, dedupe, secrets, tenants, verify, query.

Over 400 lines on purpose: every test here walks one chain built from the same sample
share's events (the constants and the append/read helpers at the top), so hashing,
appending, verifying and querying are checked against one story; split apart, each file
would need its own copy of that story.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from blume_audit_sink.append import append_entries
from blume_audit_sink.hashing import HASHED_COLUMNS, hashed_fields, record_hash
from blume_audit_sink.models import GENESIS_HASH, AuditChainHead, AuditRecord
from blume_audit_sink.problems import ProblemKind
from blume_audit_sink.search import RecordFilter, find
from blume_audit_sink.verify import VerifyReport, verify
from blume_contracts.artefacts import EXAMPLES_DIR
from blume_contracts.audit_entry import prepare
from blume_contracts.ids import share_id_for
from blume_contracts.sensitivity import fingerprint
from blume_contracts.serialisation import canonical_json
from blume_runtime.db import Database, as_utc
from sqlalchemy import text, update
from sqlmodel import col, select

TENANT = "demo-hospital"
OTHER_TENANT = "north-clinic"
STUDY_UID = "1.2.840.113619.2.55.3.604688119.868.1234567890.123"
OTHER_STUDY_UID = "1.2.840.10008.5.1.4.1.1.2.99"
SHARE_ID = "shr_" + "a" * 32
OTHER_SHARE_ID = "shr_" + "d" * 32
SEALED_LINK = "gAAAAABn-sealed-link-that-unlocks-the-study-0123456789"
START = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)

SEND_REQUESTED: dict[str, Any] = {
    **json.loads((EXAMPLES_DIR / "study.send.requested.json").read_text())["data"],
    "tenant_id": TENANT,
}
ACCEPTED: dict[str, Any] = {
    "share_id": SHARE_ID,
    "method": "external_link",
    "expires_at": "2026-11-23T09:00:00+00:00",
}
LINK_REQUESTED: dict[str, Any] = {"share_id": SHARE_ID, "study_instance_uid": STUDY_UID}
LINK_ISSUED: dict[str, Any] = {
    "share_id": SHARE_ID,
    "link_id": "lnk_" + "b" * 32,
    "token_fingerprint": "sha256:" + "c" * 32,
    "sealed_link": SEALED_LINK,
    "expires_at": "2026-11-23T09:00:00+00:00",
    "recipient": {"name": "Dr. Bob Jones", "email": "bob.jones@clinic.example"},
    "sender": {"user_id": "u-123", "name": "Dr. Alice Smith", "email": "alice@demo.example"},
    "organisation": "Demo Hospital",
    "message": None,
    "locale": "en-CA",
}


async def append_all(db: Database, events: list[Any]) -> list[list[dict[str, Any]]]:
    """Each event appended in its own transaction; the rows each append wrote."""
    results = []
    for event in events:
        async with db.transaction() as session:
            results.append(await append_entries(session, [prepare(event)]))
    return results


async def stored_records(db: Database) -> list[AuditRecord]:
    async with db.transaction() as session:
        statement = select(AuditRecord).order_by(col(AuditRecord.chain_id), col(AuditRecord.seq))
        return list((await session.exec(statement)).all())


async def stored_heads(db: Database) -> dict[str, AuditChainHead]:
    async with db.transaction() as session:
        return {head.chain_id: head for head in (await session.exec(select(AuditChainHead))).all()}


async def verify_store(db: Database, chain_id: str | None = None) -> VerifyReport:
    async with db.transaction() as session:
        return await verify(session, chain_id)


def sample_fields() -> dict[str, Any]:
    return {
        "chain_id": TENANT,
        "seq": 3,
        "event_id": "evt-1",
        "event_source": "/omegaai/send-drawer",
        "event_type": "share.accepted",
        "occurred_at": "2026-11-20T09:00:00+00:00",
        "recorded_at": "2026-11-20T09:00:01.250000+00:00",
        "share_id": SHARE_ID,
        "correlation_id": "corr-1",
        "study_uid": None,
        "payload": '{"share_id":"x"}',
    }


def test_canonical_json_is_one_spelling_whatever_the_key_order() -> None:
    """Key order and whitespace do not change the canonical form; non-ASCII is kept as is."""
    first = canonical_json({"b": 1, "a": {"y": [1, 2], "x": "Québec"}})
    second = canonical_json({"a": {"x": "Québec", "y": [1, 2]}, "b": 1})
    assert first == second == '{"a":{"x":"Québec","y":[1,2]},"b":1}'


def test_record_hash_is_sha256_of_prev_hash_newline_canonical_fields() -> None:
    """The hash formula is pinned, so a compliance team can re-verify an export independently."""
    fields = sample_fields()
    expected = hashlib.sha256(
        (GENESIS_HASH + "\n" + canonical_json(fields)).encode("utf-8")
    ).hexdigest()
    assert record_hash(GENESIS_HASH, fields) == expected


@pytest.mark.parametrize("column", HASHED_COLUMNS)
def test_record_hash_covers_every_hashed_column(column: str) -> None:
    """Changing any one hashed column changes the hash."""
    fields = sample_fields()
    changed = {**fields, column: "tampered"}
    assert record_hash(GENESIS_HASH, changed) != record_hash(GENESIS_HASH, fields)


def test_record_hash_covers_the_previous_hash() -> None:
    """The same columns after a different predecessor hash differently: the rows are chained."""
    fields = sample_fields()
    assert record_hash(GENESIS_HASH, fields) != record_hash("f" * 64, fields)


async def test_append_numbers_records_and_links_each_to_the_previous(
    sqlite_db: Database, make_event: Any
) -> None:
    """Records get seq 1, 2, 3 in append order; each prev_hash is its predecessor's hash."""
    events = [
        make_event("study.send.requested", SEND_REQUESTED, tenant=TENANT),
        make_event("share.accepted", ACCEPTED, tenant=TENANT),
        make_event("share.link.requested", LINK_REQUESTED, tenant=TENANT),
    ]
    await append_all(sqlite_db, events)

    records = await stored_records(sqlite_db)
    assert [(r.seq, r.event_id) for r in records] == [(i + 1, e.id) for i, e in enumerate(events)]
    assert records[0].prev_hash == GENESIS_HASH
    assert [r.prev_hash for r in records[1:]] == [r.hash for r in records[:-1]]
    for record in records:
        fields = hashed_fields({name: getattr(record, name) for name in HASHED_COLUMNS})
        assert record.hash == record_hash(record.prev_hash, fields)
    head = (await stored_heads(sqlite_db))[TENANT]
    assert (head.seq, head.hash) == (3, records[-1].hash)


async def test_append_records_the_envelope_and_the_looked_up_ids(
    sqlite_db: Database, make_event: Any
) -> None:
    """A record keeps type, source, id, times, correlation id, share id and study UID."""
    request = make_event(
        "study.send.requested", SEND_REQUESTED, tenant=TENANT, correlation_id="corr-42"
    )
    link = make_event("share.link.requested", LINK_REQUESTED, tenant=TENANT)
    before = datetime.now(UTC)
    await append_all(sqlite_db, [request, link])

    first, second = await stored_records(sqlite_db)
    assert (first.event_type, first.event_source, first.correlation_id) == (
        "study.send.requested",
        "/blume-share/test",
        "corr-42",
    )
    assert as_utc(first.occurred_at) == request.time
    assert before <= as_utc(first.recorded_at) <= datetime.now(UTC)
    # The request carries the share id the dispatcher derives from its dedupe key.
    assert (first.share_id, first.study_uid) == (
        share_id_for(request),
        STUDY_UID,
    )
    assert (second.share_id, second.study_uid) == (SHARE_ID, STUDY_UID)
    assert json.loads(first.payload) == SEND_REQUESTED


async def test_duplicate_event_appends_nothing(sqlite_db: Database, make_event: Any) -> None:
    """Appending an event whose (source, id) is stored writes no row and leaves the chain as is."""
    event = make_event("share.accepted", ACCEPTED, tenant=TENANT)
    [first], again = await append_all(sqlite_db, [event, event])

    assert again == []
    records = await stored_records(sqlite_db)
    assert [r.event_id for r in records] == [event.id]
    head = (await stored_heads(sqlite_db))[TENANT]
    assert (head.seq, head.hash) == (1, first["hash"])


async def test_secret_fields_are_stored_as_fingerprints(
    sqlite_db: Database, make_event: Any
) -> None:
    """A share.link.issued keeps a fingerprint of sealed_link; the sealed link is nowhere stored."""
    await append_all(sqlite_db, [make_event("share.link.issued", LINK_ISSUED, tenant=TENANT)])

    (record,) = await stored_records(sqlite_db)
    assert SEALED_LINK not in record.payload
    stored = json.loads(record.payload)
    assert stored["sealed_link"] == fingerprint(SEALED_LINK)
    assert {k: v for k, v in stored.items() if k != "sealed_link"} == {
        k: v for k, v in LINK_ISSUED.items() if k != "sealed_link"
    }


async def test_tenants_have_independent_chains(sqlite_db: Database, make_event: Any) -> None:
    """Each tenant's chain starts at seq 1 from the genesis hash and links only its own rows."""
    await append_all(
        sqlite_db,
        [
            make_event("share.accepted", ACCEPTED, tenant=TENANT),
            make_event("share.accepted", {"share_id": OTHER_SHARE_ID}, tenant=OTHER_TENANT),
            make_event("share.completed", ACCEPTED, tenant=TENANT),
            make_event("share.completed", {"share_id": OTHER_SHARE_ID}, tenant=OTHER_TENANT),
            make_event("share.failed", {"share_id": OTHER_SHARE_ID}, tenant=OTHER_TENANT),
        ],
    )

    records = await stored_records(sqlite_db)
    by_chain = {
        chain: [r for r in records if r.chain_id == chain] for chain in (TENANT, OTHER_TENANT)
    }
    assert [r.seq for r in by_chain[TENANT]] == [1, 2]
    assert [r.seq for r in by_chain[OTHER_TENANT]] == [1, 2, 3]
    for chain_records in by_chain.values():
        assert chain_records[0].prev_hash == GENESIS_HASH
        assert [r.prev_hash for r in chain_records[1:]] == [r.hash for r in chain_records[:-1]]
    heads = await stored_heads(sqlite_db)
    assert {chain: (h.seq, h.hash) for chain, h in heads.items()} == {
        TENANT: (2, by_chain[TENANT][-1].hash),
        OTHER_TENANT: (3, by_chain[OTHER_TENANT][-1].hash),
    }


@pytest.mark.parametrize(
    ("data", "kept_as"),
    [
        (
            {"method": "fax", "study": {"study_instance_uid": "not a uid\x00"}, "share_id": 7},
            {"method": "fax", "study": {"study_instance_uid": "not a uid\x00"}, "share_id": 7},
        ),
        (["not", "an", "object"], ["not", "an", "object"]),
        ("plain text", "plain text"),
        (None, None),
        (
            {"share_id": "x" * 300, "nested": {"sealed_link": SEALED_LINK}},
            {"share_id": "x" * 300, "nested": {"sealed_link": fingerprint(SEALED_LINK)}},
        ),
    ],
    ids=["broken-request", "list", "string", "null", "oversized-share-id-and-nested-secret"],
)
async def test_data_that_breaks_its_contract_is_recorded_too(
    sqlite_db: Database, make_event: Any, data: Any, kept_as: Any
) -> None:
    """Whatever JSON the data holds, it is recorded; only clean ids fill the indexed columns."""
    event = make_event("study.send.requested", data, tenant=TENANT)
    await append_all(sqlite_db, [event])

    (record,) = await stored_records(sqlite_db)
    assert (record.study_uid, record.patient_mrn, record.sender_user_id) == (None, None, None)
    # The share id comes from the envelope, never from the data.
    assert record.share_id == share_id_for(event)
    assert json.loads(record.payload) == kept_as
    assert (await verify_store(sqlite_db)).ok


async def test_verify_passes_on_an_untouched_store(sqlite_db: Database, make_event: Any) -> None:
    """verify reads every row of every chain and finds nothing wrong with an honest store."""
    await append_all(
        sqlite_db,
        [make_event("share.accepted", ACCEPTED, tenant=TENANT) for _ in range(4)]
        + [make_event("share.accepted", ACCEPTED, tenant=OTHER_TENANT) for _ in range(2)],
    )

    report = await verify_store(sqlite_db)
    assert report.ok
    assert (report.checked, report.chains, report.problems) == (6, 2, [])
    one_chain = await verify_store(sqlite_db, OTHER_TENANT)
    assert (one_chain.ok, one_chain.checked, one_chain.chains) == (True, 2, 1)


async def test_verify_passes_on_an_empty_store(sqlite_db: Database) -> None:
    """An empty store is a valid store: nothing checked, nothing wrong."""
    report = await verify_store(sqlite_db)
    assert (report.ok, report.checked, report.chains) == (True, 0, 0)


async def test_event_time_with_an_offset_hashes_the_same_after_the_round_trip(
    sqlite_db: Database, make_event: Any
) -> None:
    """An event stamped in a non-UTC zone is stored as the same instant and still verifies."""
    eastern = timezone(timedelta(hours=-5))
    stamped = datetime(2026, 11, 20, 4, 30, 15, 123456, tzinfo=eastern)
    await append_all(
        sqlite_db, [make_event("share.accepted", ACCEPTED, tenant=TENANT, time=stamped)]
    )

    (record,) = await stored_records(sqlite_db)
    assert as_utc(record.occurred_at) == stamped
    assert as_utc(record.occurred_at).isoformat() == "2026-11-20T09:30:15.123456+00:00"
    assert (await verify_store(sqlite_db)).ok


async def test_verify_reports_an_edited_row_on_sqlite(sqlite_db: Database, make_event: Any) -> None:
    """Editing a stored payload is reported as a hash mismatch at that chain and seq only.

    The edit is made as someone with the file would: dropping the trigger that refuses it.
    """
    await append_all(
        sqlite_db, [make_event("share.accepted", ACCEPTED, tenant=TENANT) for _ in range(3)]
    )
    async with sqlite_db.transaction() as session:
        await session.exec(text("DROP TRIGGER audit_records_no_update"))
        await session.exec(
            update(AuditRecord)
            .where(col(AuditRecord.chain_id) == TENANT, col(AuditRecord.seq) == 2)
            .values(payload="{}")
        )

    report = await verify_store(sqlite_db)
    assert not report.ok
    assert [(p.chain_id, p.seq, p.kind) for p in report.problems] == [
        (TENANT, 2, ProblemKind.HASH_MISMATCH)
    ]


@pytest.fixture
async def shared_store(sqlite_db: Database, make_event: Any) -> dict[str, str]:
    """Two tenants, two requests; returns a name for each event id, in occurrence order."""
    events = {
        "request-a": make_event(
            "study.send.requested", SEND_REQUESTED, tenant=TENANT, correlation_id="corr-a"
        ),
        "accepted-a": make_event(
            "share.accepted", ACCEPTED, tenant=TENANT, correlation_id="corr-a"
        ),
        "link-a": make_event(
            "share.link.requested", LINK_REQUESTED, tenant=TENANT, correlation_id="corr-a"
        ),
        "request-b": make_event(
            "study.send.requested",
            {**SEND_REQUESTED, "study": {"study_instance_uid": OTHER_STUDY_UID}},
            tenant=OTHER_TENANT,
            correlation_id="corr-b",
        ),
        "accepted-b": make_event(
            "share.accepted",
            {**ACCEPTED, "share_id": OTHER_SHARE_ID},
            tenant=OTHER_TENANT,
            correlation_id="corr-b",
        ),
    }
    # Appended out of occurrence order: query must sort by the event's time, not by arrival.
    await append_all(sqlite_db, list(reversed(events.values())))
    return {event.id: name for name, event in events.items()}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["request-a", "accepted-a", "link-a", "request-b", "accepted-b"]),
        ({"share_id": SHARE_ID}, ["accepted-a", "link-a"]),
        # accepted-a was appended after link-a (arrival order is reversed below), so it
        # inherits the study UID of its share's earlier record.
        ({"study_uid": STUDY_UID}, ["request-a", "accepted-a", "link-a"]),
        ({"correlation_id": "corr-b"}, ["request-b", "accepted-b"]),
        ({"event_type": "share.accepted"}, ["accepted-a", "accepted-b"]),
        ({"tenant_id": OTHER_TENANT}, ["request-b", "accepted-b"]),
        ({"since": START + timedelta(minutes=3)}, ["link-a", "request-b", "accepted-b"]),
        ({"until": START + timedelta(minutes=3)}, ["request-a", "accepted-a"]),
        (
            {"since": START + timedelta(minutes=2), "until": START + timedelta(minutes=4)},
            ["accepted-a", "link-a"],
        ),
        ({"event_type": "share.accepted", "tenant_id": TENANT}, ["accepted-a"]),
        ({"share_id": "shr_" + "0" * 32}, []),
        ({"limit": 2}, ["request-a", "accepted-a"]),
        ({"limit": 2, "offset": 3}, ["request-b", "accepted-b"]),
    ],
    ids=[
        "no-filter",
        "share_id",
        "study_uid",
        "correlation_id",
        "event_type",
        "tenant_id",
        "since",
        "until",
        "since-until",
        "combined",
        "no-match",
        "limit",
        "offset",
    ],
)
async def test_query_filters(
    sqlite_db: Database,
    shared_store: dict[str, str],
    filters: dict[str, Any],
    expected: list[str],
) -> None:
    """find returns exactly the records matching every filter, ordered by occurrence time."""
    paging = ("limit", "offset")
    page = {name: value for name, value in filters.items() if name in paging}
    wanted = RecordFilter(**{name: v for name, v in filters.items() if name not in paging})
    async with sqlite_db.transaction() as session:
        records = await find(session, wanted, **page)
    assert [shared_store[r.event_id] for r in records] == expected


async def test_query_bounds_in_another_zone_mean_the_same_instant(
    sqlite_db: Database, shared_store: dict[str, str]
) -> None:
    """A since bound given with an offset selects by instant, not by wall-clock digits."""
    toronto_winter = timezone(timedelta(hours=-5))
    since = (START + timedelta(minutes=4)).astimezone(toronto_winter)
    async with sqlite_db.transaction() as session:
        records = await find(session, RecordFilter(since=since))
    assert [shared_store[r.event_id] for r in records] == ["request-b", "accepted-b"]


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (-1, 0), (10, -1)])
async def test_query_refuses_a_meaningless_page(
    sqlite_db: Database, limit: int, offset: int
) -> None:
    """A limit below 1 or a negative offset is a caller error, not an empty answer."""
    async with sqlite_db.transaction() as session:
        with pytest.raises(ValueError, match="limit"):
            await find(session, RecordFilter(), limit=limit, offset=offset)
