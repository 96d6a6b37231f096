"""The outbox relay: publishes events written by committed transactions, then deletes them.

A worker publishes what its handler staged straight from memory right after commit, all
at once, each confirmed by the broker; the rows are deleted in batches by the background
loop, which also publishes anything a crash or a broker outage left behind. Publishing
twice is harmless: consumers dedupe by event id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from datetime import timedelta

import structlog
from sqlmodel import col, delete, select

from blume_runtime.db import Database, OutboxMessage, utcnow
from blume_runtime.tracing import span
from blume_runtime.transport import OutgoingMessage, Transport

log = structlog.get_logger("outbox")

SWEEP_AFTER = timedelta(seconds=5)
"""A row older than this was not published by its worker (crash, broker outage)."""


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        transport: Transport,
        *,
        batch_size: int = 200,
        sweeps: Collection[str] | None = None,
    ) -> None:
        """``sweeps``: the event types whose stranded rows this process publishes (None:
        every type). With a broker user per service, a process publishes only what its own
        services produce: under its user, another service's events would be refused by the
        broker's permissions or, past them, by every consumer as forged. Each type's rows
        wait for a process of their producer."""
        self._db = db
        self._transport = transport
        self._batch_size = batch_size
        self._sweeps = None if sweeps is None else sorted(set(sweeps))
        self._published: list[str] = []
        self._sweeping = asyncio.Lock()
        """One sweep at a time in a process: a second waits for the first's rows to go."""

    async def publish_committed(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish what a committed transaction staged; its rows are deleted later, in bulk.

        If the broker refuses, the rows stay and the sweep publishes them.
        """
        if not messages:
            return
        with span("publish", {"messaging.batch.message_count": len(messages)}, client=True):
            await asyncio.gather(*(self._transport.publish(message) for message in messages))
        self._published.extend(message.message_id for message in messages)

    async def forget_published(self) -> int:
        """Delete the rows of everything published since the last call; return how many."""
        published, self._published = self._published, []
        for start in range(0, len(published), self._batch_size):
            batch = published[start : start + self._batch_size]
            async with self._db.transaction() as session:
                await session.exec(
                    delete(OutboxMessage).where(col(OutboxMessage.event_id).in_(batch))
                )
        return len(published)

    async def sweep(self, *, older_than: timedelta = SWEEP_AFTER) -> int:
        """Publish rows older than ``older_than`` that no worker published; return how many.

        The rows stay locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) from the moment they
        are chosen until those the broker confirmed are deleted in the same transaction, so
        two sweepers (two processes, or a sweep beside ``wait_until_idle``) never publish a
        row twice. A row the broker refused stays for the next sweep; if the broker refused
        any, the first refusal is raised once the confirmed rows are deleted.
        """
        async with self._sweeping:
            return await self._sweep(older_than)

    async def _sweep(self, older_than: timedelta) -> int:
        await self.forget_published()
        async with self._db.transaction() as session:
            query = (
                select(OutboxMessage)
                .where(col(OutboxMessage.created_at) < utcnow() - older_than)
                .order_by(col(OutboxMessage.created_at))
                .limit(self._batch_size)
            )
            if self._sweeps is not None:
                query = query.where(col(OutboxMessage.routing_key).in_(self._sweeps))
            if not self._db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            rows = list((await session.exec(query)).all())
            outcomes = await asyncio.gather(
                *(
                    self._transport.publish(
                        OutgoingMessage(row.routing_key, row.body, row.event_id)
                    )
                    for row in rows
                ),
                return_exceptions=True,
            )
            confirmed = [
                row.event_id
                for row, outcome in zip(rows, outcomes, strict=True)
                if not isinstance(outcome, BaseException)
            ]
            if confirmed:
                await session.exec(
                    delete(OutboxMessage).where(col(OutboxMessage.event_id).in_(confirmed))
                )
        refusals = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if refusals:
            raise refusals[0]
        return len(confirmed)

    async def run_forever(self, interval: float) -> None:
        """Delete published rows often; sweep for stranded ones every ``interval`` seconds."""
        next_sweep = asyncio.get_running_loop().time() + interval
        while True:
            await asyncio.sleep(min(interval, 0.2))
            try:
                await self.forget_published()
                if asyncio.get_running_loop().time() >= next_sweep:
                    next_sweep = asyncio.get_running_loop().time() + interval
                    if count := await self.sweep():
                        log.info("outbox swept", published=count)
            except Exception as error:  # noqa: BLE001 - the loop must outlive a broker blip
                log.warning("outbox relay loop failed", error_type=type(error).__name__)
