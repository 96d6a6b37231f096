"""The records the sealer stores for a fixed input, pinned on real PostgreSQL.

Every column of a record is hashed (the hashed columns, then ``prev_hash`` and ``hash``
themselves through the link), so a chain's head hash pins every byte of every record in it.
The expected heads were computed by the sealer before its ingest work (main at 4147d2f):
a faster sealer must store the same records for the same staged events, and chains written
before a change must keep verifying after it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from blume_audit_sink.models import AuditChainHead, AuditPending
from blume_audit_sink.sealer import seal_all
from blume_audit_sink.verify import verify
from blume_contracts.audit_entry import prepare
from blume_contracts.envelope import RawEvent
from blume_runtime.db import Database
from sqlmodel import select

from .conftest import share_life

pytestmark = pytest.mark.integration

RECEIVED = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)

PINNED_HEADS = {
    "demo-hospital": (6, "a03dfb4bc2c3a6253a32abb846dd6c652f9bca983803518045e304001db11071"),
    "north-clinic": (6, "f6bf31c34a3557fb404cb62ffb3b511890f0fcd6c1fab9ff9a3bddbb98810960"),
}
"""(seq, hash) of each chain's head once the fixed events below are sealed."""


@pytest.fixture
async def database(migrated_database_url: str) -> AsyncIterator[Database]:
    db = Database(migrated_database_url, stages_audit=True)
    yield db
    await db.dispose()


def fixed_events(make_event: Any, tenant: str, mrn: str) -> list[RawEvent]:
    """One share's life with everything the sealer treats specially: PHI with non-ASCII text,
    quotes and a backslash in the request, a secret to fingerprint, a null, later events
    inheriting the patient and people from the request (in the same batch and from the
    store)."""
    return share_life(
        make_event,
        tenant=tenant,
        mrn=mrn,
        description='CT « thorax » Montréal \\ "quoted"',
        correlation_id=f"corr-{tenant}",
    )


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
