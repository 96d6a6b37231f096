"""The outbox relay: publishes events written by committed transactions, then deletes them.

A worker relays its own rows right after commit; the background sweep publishes anything a
crash or a broker outage left behind. Publishing twice is harmless: consumers dedupe by id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import structlog
from sqlmodel import col, delete, select

from blume_runtime.db import Database, OutboxMessage, utcnow
from blume_runtime.transport import OutgoingMessage, Transport

log = structlog.get_logger("outbox")


class OutboxRelay:
    def __init__(self, db: Database, transport: Transport, *, batch_size: int = 200) -> None:
        self._db = db
        self._transport = transport
        self._batch_size = batch_size

    async def relay(self, event_ids: Sequence[str]) -> None:
        """Publish the given rows (just committed by this process)."""
        if not event_ids:
            return
        async with self._db.transaction() as session:
            rows = (
                await session.exec(
                    select(OutboxMessage).where(col(OutboxMessage.event_id).in_(event_ids))
                )
            ).all()
        await self._publish(list(rows))

    async def sweep(self, *, older_than: timedelta = timedelta(seconds=5)) -> int:
        """Publish rows older than ``older_than`` that no worker relayed; return how many."""
        async with self._db.transaction() as session:
            query = (
                select(OutboxMessage)
                .where(col(OutboxMessage.created_at) < utcnow() - older_than)
                .order_by(col(OutboxMessage.created_at))
                .limit(self._batch_size)
            )
            if not self._db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            rows = list((await session.exec(query)).all())
        await self._publish(rows)
        return len(rows)

    async def _publish(self, rows: list[OutboxMessage]) -> None:
        published: list[str] = []
        try:
            for row in rows:
                await self._transport.publish(
                    OutgoingMessage(row.routing_key, row.body, row.event_id)
                )
                published.append(row.event_id)
        finally:
            if published:
                async with self._db.transaction() as session:
                    await session.exec(
                        delete(OutboxMessage).where(col(OutboxMessage.event_id).in_(published))
                    )

    async def run_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                count = await self.sweep()
                if count:
                    log.info("outbox swept", published=count)
            except Exception as error:  # noqa: BLE001 - the sweep must outlive a broker blip
                log.warning("outbox sweep failed", error_type=type(error).__name__)
