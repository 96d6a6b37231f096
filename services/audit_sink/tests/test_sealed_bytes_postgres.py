"""The records the sealer stores for a fixed input, pinned on real PostgreSQL.

Every column of a record is hashed (the hashed columns, then ``prev_hash`` and ``hash``
themselves through the link), so a chain's head hash pins every byte of every record in it.
The expected heads were computed by the sealer before its ingest work (main at db750ea):
a faster sealer must store the same records for the same staged events, and chains written
before a change must keep verifying after it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from blume_audit_sink.entry import prepare
from blume_audit_sink.models import AuditChainHead, AuditPending
from blume_audit_sink.sealer import seal_all
from blume_audit_sink.verify import verify
from blume_contracts.envelope import RawEvent
from blume_contracts.ids import share_id_for
from blume_runtime.db import Database
from sqlmodel import select

from .conftest import request_data

pytestmark = pytest.mark.integration

RECEIVED = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)

PINNED_HEADS = {
    "demo-hospital": (5, "c0704541cbc8d3bc2193c2c4ac4755b6e37595a114bfb581442fc0d32ccb4b42"),
    "north-clinic": (5, "3ad21f0ed1fe4270942542074e6a6198feea986b958a500cf748dd068f5cf3af"),
}
"""(seq, hash) of each chain's head once the fixed events below are sealed."""


@pytest.fixture
async def database(migrated_database_url: str) -> AsyncIterator[Database]:
    db = Database(migrated_database_url)
    yield db
    await db.dispose()


def fixed_events(make_event: Any, tenant: str, mrn: str) -> list[RawEvent]:
    """One share's life with everything the sealer treats specially: PHI and non-ASCII text
    in the request, a secret to fingerprint, a null, later events inheriting the patient and
    people from the request (in the same batch and from the store)."""
    request = make_event(
        "study.send.requested",
        {**request_data(mrn=mrn), "message": 'Montréal, « urgent » \\ "quoted"'},
        tenant=tenant,
        correlation_id=f"corr-{tenant}",
    )
    share_id = share_id_for(request)
    later: list[tuple[str, dict[str, Any]]] = [
        ("share.accepted", {"share_id": share_id, "method": "external_link"}),
        (
            "share.link.issued",
            {
                "share_id": share_id,
                "link_id": "lnk_" + "b" * 32,
                "token_fingerprint": "sha256:" + "c" * 32,
                "sealed_link": "gAAAAABn-sealed-link-" + share_id,
                "message": None,
                "locale": "fr-CA",
            },
        ),
        ("share.completed", {"share_id": share_id, "method": "external_link"}),
        (
            "share.link.accessed",
            {"share_id": share_id, "client": {"client_ip": "203.0.113.7", "user_agent": "é"}},
        ),
    ]
    return [request] + [
        make_event(event_type, data, tenant=tenant, correlation_id=f"corr-{tenant}")
        for event_type, data in later
    ]


async def test_the_sealer_stores_the_pinned_records_for_fixed_staged_events(
    database: Database, make_event: Any
) -> None:
    """Fixed events staged as the worker stages them and sealed in small batches (so some
    inherit their share's context within a batch and some from the store) end in the pinned
    heads, and every chain verifies."""
    events = fixed_events(make_event, "demo-hospital", "MRN-0001") + fixed_events(
        make_event, "north-clinic", "MRN-0002"
    )
    async with database.transaction() as session:
        for number, event in enumerate(events):
            entry = prepare(event, received_at=RECEIVED + timedelta(milliseconds=number))
            session.add(
                AuditPending(
                    event_source=entry.event_source,
                    event_id=entry.event_id,
                    received_at=entry.recorded_at,
                    entry=entry.to_json(),
                )
            )
    assert await seal_all(database, batch_size=3) == len(events)
    async with database.transaction() as session:
        heads = (await session.exec(select(AuditChainHead))).all()
        report = await verify(session)
    assert {head.chain_id: (head.seq, head.hash) for head in heads} == PINNED_HEADS
    assert (report.ok, report.checked) == (True, len(events))
