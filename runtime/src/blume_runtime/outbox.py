"""The outbox relay: publishes events written by committed transactions, then deletes them.

A worker publishes what its handler staged straight from memory right after commit, all
at once, each confirmed by the broker. The background loop runs a sweep every
``BLUME_OUTBOX_POLL_SECONDS``: in one transaction it deletes, in bulk, the rows of all that
was published since the last sweep, then publishes anything a crash or a broker outage left
behind. Deleting costs no transaction of its own, and one statement a round.

A crash between a publish and the deletion of its row leaves the row behind, and the sweep
publishes that event again after a restart. That is allowed: every consumer dedupes by
event id in its inbox, so the second copy has no effect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Final

import structlog
from sqlalchemy import bindparam, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_runtime.db import OUTBOX_TABLE, Database, utcnow
from blume_runtime.tracing import span
from blume_runtime.transport import OutgoingMessage, Transport

log = structlog.get_logger("outbox")

_DELETE: Final = delete(OUTBOX_TABLE).where(
    OUTBOX_TABLE.c.event_id.in_(bindparam("event_ids", expanding=True))
)

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
        """Publish what a committed transaction staged; the next sweep deletes its rows.

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
        if not published:
            return 0
        try:
            async with self._db.transaction() as session:
                await self._delete(session, published)
        except BaseException:
            self._published.extend(published)  # the next sweep deletes them
            raise
        return len(published)

    async def _delete(self, session: AsyncSession, event_ids: list[str]) -> None:
        connection = await session.connection()
        for start in range(0, len(event_ids), self._batch_size):
            batch = event_ids[start : start + self._batch_size]
            await connection.execute(_DELETE, {"event_ids": batch})

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
        published, self._published = self._published, []
        try:
            async with self._db.transaction() as session:
                # First: a row published but not deleted yet is not stranded.
                await self._delete(session, published)
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
                await self._delete(session, confirmed)
        except BaseException:
            self._published.extend(published)  # not deleted: the next sweep tries again
            raise
        refusals = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if refusals:
            raise refusals[0]
        return len(confirmed)

    async def run_forever(self, interval: float) -> None:
        """Every ``interval`` seconds, sweep: delete the published rows, publish stranded ones."""
        while True:
            await asyncio.sleep(interval)
            try:
                if count := await self.sweep():
                    log.info("outbox swept", published=count)
            except Exception as error:  # noqa: BLE001 - the loop must outlive a broker blip
                log.warning("outbox relay loop failed", error_type=type(error).__name__)
