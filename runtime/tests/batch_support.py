"""A service whose one delivery holds its transaction open while others queue behind it:
how the group commit tests form a batch on purpose, and count what it committed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import ShareCompleted
from blume_runtime import metrics
from blume_runtime.db import Database, InboxEntry, OutboxMessage
from blume_runtime.outbox import OutboxRelay
from blume_runtime.service import HandlerContext, Service
from blume_runtime.testing import FakeDelivery, RecordingTransport
from blume_runtime.worker import Worker
from sqlmodel import col, select

from runtime.tests.pipeline_support import NOW, SHARE, accepted_event, settings_for


class Gated:
    """Emits ``share.completed`` for each ``share.accepted``. The event ``gate`` waits for
    ``release`` (what queues meanwhile forms a batch); ids in ``failing`` raise ``failure``.
    Records each run and the ``event_id`` its log context carried."""

    def __init__(self, *, group_commit: bool = True) -> None:
        self.release = asyncio.Event()
        self.gate_entered = asyncio.Event()
        self.failing: set[str] = set()
        self.failure: Exception = RuntimeError("the handler failed")
        self.runs: list[str] = []
        self.logged_ids: dict[str, Any] = {}
        self.service = Service("gated", group_commit=group_commit)
        self.service.handles("share.accepted")(self.handle)

    async def handle(self, event: CloudEvent[Any], ctx: HandlerContext) -> None:
        self.runs.append(event.id)
        self.logged_ids[event.id] = structlog.contextvars.get_contextvars().get("event_id")
        if event.id == "gate":
            self.gate_entered.set()
            await self.release.wait()
        ctx.emit(
            "share.completed",
            ShareCompleted(share_id=SHARE, method="external_link", completed_at=NOW),
        )
        if event.id in self.failing:
            raise self.failure


def gated_worker(db: Database, gated: Gated, tmp_path: Path) -> tuple[Worker, RecordingTransport]:
    transport = RecordingTransport()
    worker = Worker(gated.service, db, OutboxRelay(db, transport), settings_for(tmp_path))
    return worker, transport


def transactions() -> float:
    return float(metrics.DB_TRANSACTIONS._value.get())


def statements() -> float:
    return float(metrics.DB_STATEMENTS._value.get())


async def behind_gate(worker: Worker, gated: Gated, event_ids: list[str]) -> list[FakeDelivery]:
    """Deliver ``gate``, then ``event_ids`` while its transaction runs; settle them all.

    Returns the deliveries of ``event_ids``, in order (the gate's is settled too).
    """
    gate = asyncio.create_task(worker(FakeDelivery.of(accepted_event("gate"))))
    await gated.gate_entered.wait()
    deliveries = [FakeDelivery.of(accepted_event(event_id)) for event_id in event_ids]
    queued = [asyncio.create_task(worker(delivery)) for delivery in deliveries]
    for _ in range(3):  # each reaches the queue within a turn of the loop
        await asyncio.sleep(0)
    gated.release.set()
    await asyncio.gather(gate, *queued)
    return deliveries


async def committed(db: Database) -> tuple[list[str], int]:
    """The event ids in the inbox (besides the gate's) and how many outbox rows there are."""
    async with db.transaction() as session:
        claimed = (await session.exec(select(InboxEntry.event_id))).all()
        outbox = (await session.exec(select(col(OutboxMessage.event_id)))).all()
    return sorted(event_id for event_id in claimed if event_id != "gate"), len(outbox)


async def committing_behind_gate(
    worker: Worker, gated: Gated, event_ids: list[str]
) -> tuple[list[FakeDelivery], float]:
    """``behind_gate``, and how many transactions were committed meanwhile."""
    before = transactions()
    deliveries = await behind_gate(worker, gated, event_ids)
    return deliveries, transactions() - before
