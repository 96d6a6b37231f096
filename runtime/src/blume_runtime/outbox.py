"""The outbox relay: publishes events written by committed transactions, then deletes them.

A worker publishes what its handler staged straight from memory right after commit, all
at once, each confirmed by the broker. Their rows are deleted by the next transaction of
the same database, whatever it is (``Database.transaction``: a statement in it, not a
transaction of its own); the background loop deletes them itself only when no transaction
came along for a round, and publishes anything a crash or a broker outage left behind.

A crash between a publish and the deletion of its row leaves the row behind, and the sweep
publishes that event again after a restart. That is allowed: every consumer dedupes by
event id in its inbox, so the second copy has no effect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from datetime import timedelta

import structlog
from sqlalchemy import bindparam, select

from blume_runtime.db import OUTBOX_TABLE, Database, utcnow
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
        self._sweeping = asyncio.Lock()
        """One sweep at a time in a process: a second waits for the first's rows to go."""
        outbox = OUTBOX_TABLE
        stranded = (
            select(outbox.c.event_id, outbox.c.routing_key, outbox.c.body)
            .where(outbox.c.created_at < bindparam("cutoff"))
            .order_by(outbox.c.created_at)
            .limit(batch_size)
        )
        if self._sweeps is not None:
            stranded = stranded.where(outbox.c.routing_key.in_(self._sweeps))
        if not db.is_sqlite:
            stranded = stranded.with_for_update(skip_locked=True)
        self._stranded = stranded
        """Built once (compiled once): rows older than ``cutoff`` that nobody published."""

    async def publish_committed(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish what a committed transaction staged; the next transaction deletes its rows.

        If the broker refuses, the rows stay and the sweep publishes them.
        """
        if not messages:
            return
        with span("publish", {"messaging.batch.message_count": len(messages)}, client=True):
            await asyncio.gather(*(self._transport.publish(message) for message in messages))
        self._db.forget_published([message.message_id for message in messages])

    async def forget_published(self) -> int:
        """Delete the rows of everything published and not deleted yet; return how many."""
        count = 0
        while waiting := self._db.published_waiting:
            async with self._db.transaction():
                pass  # a transaction deletes what was published (``Database.transaction``)
            count += waiting - self._db.published_waiting
        return count

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
        async with self._db.transaction() as session:
            # First: a row published but not deleted yet is not stranded.
            await self._db.delete_published(session)
            connection = await session.connection()
            found = await connection.execute(self._stranded, {"cutoff": utcnow() - older_than})
            rows = found.all()
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
                await self._db.delete_outbox_rows(session, confirmed)
        refusals = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if refusals:
            raise refusals[0]
        return len(confirmed)

    async def run_forever(self, interval: float) -> None:
        """Every ``interval`` seconds, sweep for stranded rows (deleting published ones first:
        those no transaction has deleted since)."""
        while True:
            await asyncio.sleep(interval)
            try:
                if count := await self.sweep():
                    log.info("outbox swept", published=count)
            except Exception as error:  # noqa: BLE001 - the loop must outlive a broker blip
                log.warning("outbox relay loop failed", error_type=type(error).__name__)
