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

import pytest
from blume_contracts.envelope import CloudEvent
from blume_runtime.db import Database, InboxEntry
from blume_runtime.outbox import OutboxRelay
from blume_runtime.service import HandlerContext, Service
from blume_runtime.settings import Settings
from blume_runtime.testing import FakeDelivery, RecordingTransport
from blume_runtime.worker import Worker
from sqlmodel import select

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
