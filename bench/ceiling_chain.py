"""The minimal design's chain for ``bench.ceiling``: three hops, each one PostgreSQL
transaction between receiving and republishing, written as cheaply as psycopg allows.

Every hop's transaction is one prepared statement in autocommit (so one round trip and one
COMMIT): a CTE whose inbox claim gates the effect, outbox and audit rows, over arrays so
that a batch of deliveries is the same statement. The schema is the least the guarantees
need: an inbox keyed by (consumer, message id), an effect row, an outbox row until its
publish is confirmed, and audit staging until the sealer chains it. (A little over 400
lines: the whole minimal design, statements, hops and sealer, reads in one place.)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aio_pika
import psycopg
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue
from psycopg.rows import TupleRow

from bench.costs import Costs, Meter
from bench.harness import BenchError
from bench.measuring import Figures, Send, drive
from bench.raw_baseline import CONTENT_TYPE, persistent_sends

EXCHANGE: Final = "bench.ceiling"
PRODUCER: Final = "guest"
"""The broker user the bench connects as: RabbitMQ checks a message's ``user_id`` against it."""
OUTBOX_CLEAR_EVERY: Final = 100
"""Confirmed outbox rows a hop clears with one DELETE."""
SEAL_BATCH: Final = 2000
SEAL_IDLE_SECONDS: Final = 0.05

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS inbox (
    consumer text NOT NULL, message_id text NOT NULL, PRIMARY KEY (consumer, message_id));
CREATE TABLE IF NOT EXISTS effect (
    consumer text NOT NULL, message_id text NOT NULL, body bytea NOT NULL,
    PRIMARY KEY (consumer, message_id));
CREATE TABLE IF NOT EXISTS outbox (
    id bigserial PRIMARY KEY, message_id text NOT NULL, routing_key text NOT NULL,
    body bytea NOT NULL);
CREATE TABLE IF NOT EXISTS audit_staging (
    id bigserial PRIMARY KEY, event_source text NOT NULL, event_id text NOT NULL,
    producer text NOT NULL, entry bytea NOT NULL, UNIQUE (event_source, event_id));
CREATE TABLE IF NOT EXISTS audit_record (
    seq bigint PRIMARY KEY, event_source text NOT NULL, event_id text NOT NULL,
    producer text NOT NULL, entry bytea NOT NULL, previous bytea NOT NULL, hash bytea NOT NULL);
"""
TABLES: Final = "inbox, effect, outbox, audit_staging, audit_record"

# The hop's one statement. %(consumer)s, arrays of ids, bodies and producers; the claim gates
# everything else, so a redelivered message writes nothing and is only acked.
_CLAIM: Final = """
WITH incoming AS (
    SELECT * FROM unnest(%(ids)s::text[], %(bodies)s::bytea[], %(producers)s::text[])
        AS t(message_id, body, producer)),
claimed AS (
    INSERT INTO inbox (consumer, message_id) SELECT %(consumer)s, message_id FROM incoming
    ON CONFLICT DO NOTHING RETURNING message_id),
fresh AS (SELECT incoming.* FROM incoming JOIN claimed USING (message_id)),
effect_rows AS (
    INSERT INTO effect (consumer, message_id, body)
    SELECT %(consumer)s, message_id, body FROM fresh)"""
_OUTBOX: Final = """,
outbox_rows AS (
    INSERT INTO outbox (message_id, routing_key, body)
    SELECT message_id || '.' || %(consumer)s, %(next_key)s, body FROM fresh
    RETURNING id, message_id)"""
_AUDIT: Final = """,
audit_rows AS (
    INSERT INTO audit_staging (event_source, event_id, producer, entry)
    SELECT 'bench', message_id, producer, body FROM fresh
    ON CONFLICT DO NOTHING)"""
_EXTRA: Final = """,
extra_rows AS (
    INSERT INTO audit_staging (event_source, event_id, producer, entry)
    SELECT 'bench', message_id || '.extra' || n, producer, body
    FROM fresh CROSS JOIN generate_series(1, %(extra)s) AS n
    ON CONFLICT DO NOTHING)"""
_AUDIT_ONLY: Final = """
INSERT INTO audit_staging (event_source, event_id, producer, entry)
SELECT 'bench', message_id, producer, body
FROM unnest(%(ids)s::text[], %(bodies)s::bytea[], %(producers)s::text[])
    AS t(message_id, body, producer)
ON CONFLICT DO NOTHING"""


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    audit_in_transaction: bool
    batch: int = 1
    """Deliveries per transaction (and per ``ack(multiple=True)``)."""
    hops: int = 3
    extra_events: int = 0
    """Events per share that only the audit needs: staged in the first hop's transaction,
    never published."""

    @property
    def events(self) -> int:
        """Audited events per share: each hop's incoming one, and the extra ones."""
        return self.hops + self.extra_events


@dataclass(frozen=True)
class VariantRun:
    figures: Figures
    costs: Costs


def _statement(*, publishes: bool, audit: bool, extra: bool) -> str:
    text = (
        _CLAIM
        + (_OUTBOX if publishes else "")
        + (_AUDIT if audit else "")
        + (_EXTRA if extra else "")
    )
    result = "SELECT id, message_id FROM outbox_rows" if publishes else "SELECT 1 WHERE false"
    return f"{text}\n{result}"


def _hop_key(run: str, hop: int) -> str:
    return f"{run}.hop{hop}"


class Consumer:
    """One hop (or the audit copies' consumer): its own connection, one transaction per
    batch of deliveries, the publish confirmed after the commit, the ack after that."""

    def __init__(
        self,
        name: str,
        connection: psycopg.AsyncConnection[TupleRow],
        exchange: AbstractExchange,
        *,
        statement: str,
        next_key: str | None,
        batch: int,
        extra: int = 0,
        on_done: Callable[[AbstractIncomingMessage], None] | None = None,
    ) -> None:
        self.name = name
        self._connection = connection
        self._exchange = exchange
        self._statement = statement
        self._next_key = next_key
        self._batch = batch
        self._extra = extra
        self._on_done = on_done
        self._incoming: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._confirmed: list[int] = []
        self._in_flight: set[asyncio.Task[None]] = set()

    async def receive(self, message: AbstractIncomingMessage) -> None:
        self._incoming.put_nowait(message)

    async def run(self) -> None:
        try:
            while True:
                messages = [await self._incoming.get()]
                while len(messages) < self._batch and not self._incoming.empty():
                    messages.append(self._incoming.get_nowait())
                await self._handle(messages)
                if len(self._confirmed) >= OUTBOX_CLEAR_EVERY:
                    await self.clear_outbox()
        except Exception as error:
            # Said at once: the batch would otherwise only time out.
            print(f"{self.name} stopped: {type(error).__name__}: {error}", file=sys.stderr)
            raise

    async def settle(self) -> None:
        """Wait for the publishes and acks still in flight, then clear the outbox."""
        await asyncio.gather(*self._in_flight)
        await self.clear_outbox()

    async def _handle(self, messages: Sequence[AbstractIncomingMessage]) -> None:
        for message in messages:
            json.loads(message.body)  # the least validation: the envelope parses
        cursor = await self._connection.execute(
            self._statement,
            {
                "consumer": self.name,
                "next_key": self._next_key,
                "extra": self._extra,
                "ids": [message.message_id for message in messages],
                "bodies": [message.body for message in messages],
                "producers": [message.user_id or "" for message in messages],
            },
            prepare=True,
        )
        rows = await cursor.fetchall() if cursor.description is not None else []
        outbox = {str(message_id): int(str(row_id)) for row_id, message_id in rows}
        by_id = {message.message_id: message for message in messages}
        if self._batch == 1:
            # Don't wait for the confirm before the next transaction: the broker round trip
            # overlaps the next commit, as a worker's concurrent handlers would.
            task = asyncio.create_task(self._publish_and_ack(messages, outbox, by_id))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        else:
            await self._publish_and_ack(messages, outbox, by_id)

    async def _publish_and_ack(
        self,
        messages: Sequence[AbstractIncomingMessage],
        outbox: dict[str, int],
        by_id: dict[str | None, AbstractIncomingMessage],
    ) -> None:
        if self._next_key is not None:
            # An outgoing id is the incoming one + "." + this hop: the row's source.
            sources = {message_id: by_id[message_id.rsplit(".", 1)[0]] for message_id in outbox}
            await asyncio.gather(
                *(
                    self._exchange.publish(
                        aio_pika.Message(
                            source.body,
                            message_id=message_id,
                            correlation_id=source.correlation_id,
                            content_type=CONTENT_TYPE,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            user_id=PRODUCER,
                        ),
                        routing_key=self._next_key,
                    )
                    for message_id, source in sources.items()
                )
            )
            self._confirmed.extend(outbox.values())
        await messages[-1].ack(multiple=len(messages) > 1)
        if self._on_done is not None:
            for message in messages:
                self._on_done(message)

    async def clear_outbox(self) -> None:
        """Remove the rows whose publish was confirmed: one statement for many."""
        ids, self._confirmed = self._confirmed, []
        if ids:
            await self._connection.execute("DELETE FROM outbox WHERE id = ANY(%s)", (ids,))


class Sealer:
    """Chains staged audit rows in batches, as the audit sink's sealer does: take the oldest
    staged rows, hash each over its predecessor, COPY them into the chain, one transaction."""

    def __init__(self, connection: psycopg.AsyncConnection[TupleRow]) -> None:
        self._connection = connection
        self._head = b"\0" * 32
        self._seq = 0
        self.sealed = 0

    async def seal_batch(self) -> int:
        async with self._connection.transaction():
            cursor = await self._connection.execute(
                "DELETE FROM audit_staging WHERE id IN (SELECT id FROM audit_staging"
                " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING id, event_source, event_id, producer, entry",
                (SEAL_BATCH,),
                prepare=True,
            )
            rows = sorted(await cursor.fetchall())
            if rows:
                async with cursor.copy(
                    "COPY audit_record (seq, event_source, event_id, producer, entry, previous,"
                    " hash) FROM STDIN"
                ) as copy:
                    for _id, source, event_id, producer, entry in rows:
                        digest = hashlib.sha256(self._head + bytes(entry)).digest()
                        self._seq += 1
                        await copy.write_row(
                            (self._seq, source, event_id, producer, entry, self._head, digest)
                        )
                        self._head = digest
        self.sealed += len(rows)
        return len(rows)

    async def run(self) -> None:
        while True:
            if not await self.seal_batch():
                await asyncio.sleep(SEAL_IDLE_SECONDS)


async def _quiet(consumers: Sequence[Consumer], sealer: Sealer, events: int, limit: float) -> None:
    """Wait until every event is sealed, then clear what is left of the outboxes: the work a
    batch causes after its last share belongs to it."""
    started = time.perf_counter()
    while sealer.sealed < events:
        if time.perf_counter() - started > limit:
            raise BenchError(f"only {sealer.sealed} of {events} audit records sealed")
        await asyncio.sleep(0.01)
    for consumer in consumers:
        await consumer.settle()


async def _connect(database_url: str) -> psycopg.AsyncConnection[TupleRow]:
    return await psycopg.AsyncConnection.connect(database_url, autocommit=True)


async def run_variant(
    variant: Variant,
    *,
    amqp_url: str,
    database_url: str,
    bodies: Sequence[tuple[str, bytes]],
    warmup_bodies: Sequence[tuple[str, bytes]],
    prefetch: int,
    meter: Meter,
    batch_limit: float,
    progress_every: float,
    diagnose: Callable[[], str],
) -> VariantRun:
    """Run ``variant`` over empty tables and its own queues (deleted afterwards); check that
    every share arrived once and every event was audited once."""
    run = f"bench.ceiling.{uuid.uuid4().hex[:8]}"
    admin = await _connect(database_url)
    await admin.execute(SCHEMA)
    await admin.execute(f"TRUNCATE {TABLES}")
    arrivals: dict[str, float] = {}
    copies = 0

    def arrived(message: AbstractIncomingMessage) -> None:
        nonlocal copies
        copies += 1
        arrivals.setdefault(message.correlation_id or "", time.perf_counter())

    connection = await aio_pika.connect(amqp_url)
    tasks: list[asyncio.Task[None]] = []
    queues: list[AbstractQueue] = []
    consuming: list[tuple[AbstractQueue, str]] = []
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC)
        consumers: list[Consumer] = []
        audit_keys = [] if variant.audit_in_transaction else ["#"]
        for hop in [*range(1, variant.hops + 1), *(0 for _ in audit_keys)]:
            queue = await channel.declare_queue(
                f"{run}.{'audit' if hop == 0 else f'hop{hop}'}",
                durable=True,
                arguments={"x-queue-type": "quorum"},
            )
            queues.append(queue)
            await queue.bind(exchange, routing_key="#" if hop == 0 else _hop_key(run, hop))
            consumer_channel = await connection.channel(publisher_confirms=True)
            await consumer_channel.set_qos(prefetch_count=prefetch)
            publishes = 0 < hop < variant.hops
            consumer = Consumer(
                "audit" if hop == 0 else f"hop{hop}",
                await _connect(database_url),
                await consumer_channel.get_exchange(EXCHANGE),
                statement=_AUDIT_ONLY
                if hop == 0
                else _statement(
                    publishes=publishes,
                    audit=variant.audit_in_transaction,
                    extra=hop == 1 and variant.extra_events > 0,
                ),
                extra=variant.extra_events,
                next_key=_hop_key(run, hop + 1) if publishes else None,
                batch=1 if hop == 0 else variant.batch,
                on_done=arrived if hop == variant.hops else None,
            )
            consumers.append(consumer)
            tasks.append(asyncio.create_task(consumer.run()))
            consumed = await consumer_channel.get_queue(queue.name)
            consuming.append((consumed, await consumed.consume(consumer.receive)))
        sealer = Sealer(await _connect(database_url))
        tasks.append(asyncio.create_task(sealer.run()))

        def batch(items: Sequence[tuple[str, bytes]]) -> list[tuple[str, Send]]:
            return persistent_sends(
                exchange, _hop_key(run, 1), items, user_id=PRODUCER, correlate=True
            )

        common: dict[str, Any] = {"batch_limit": batch_limit, "progress_every": progress_every}
        await drive(
            f"{variant.name} warm-up",
            batch(warmup_bodies),
            lambda: arrivals,
            diagnose=diagnose,
            **common,
        )
        await _quiet(consumers, sealer, variant.events * len(warmup_bodies), batch_limit)
        before = await asyncio.to_thread(meter.snapshot)
        figures = await drive(
            variant.name, batch(bodies), lambda: arrivals, diagnose=diagnose, **common
        )
        events = variant.events * (len(warmup_bodies) + len(bodies))
        await _quiet(consumers, sealer, events, batch_limit)
        after = await asyncio.to_thread(meter.snapshot)
        await _check(admin, variant, shares=len(warmup_bodies) + len(bodies), copies=copies)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for queue, tag in consuming:
            await queue.cancel(tag)  # before the delete: no broker-side cancel notices
        for queue in queues:
            await queue.delete(if_unused=False, if_empty=False)
        await connection.close()
        await admin.close()
    return VariantRun(figures=figures, costs=Costs.between(before, after, len(bodies)))


async def _check(
    admin: psycopg.AsyncConnection[TupleRow], variant: Variant, *, shares: int, copies: int
) -> None:
    """Every share reached the last hop once, and every event is in the chain once."""
    cursor = await admin.execute(
        "SELECT (SELECT count(*) FROM effect WHERE consumer = %s),"
        " (SELECT count(DISTINCT event_id) FROM audit_record), (SELECT count(*) FROM audit_record),"
        " (SELECT count(*) FROM outbox), (SELECT count(*) FROM audit_staging)",
        (f"hop{variant.hops}",),
    )
    row = await cursor.fetchone()
    assert row is not None
    last_hop, distinct_audited, audited, outbox_left, staged_left = (int(str(v)) for v in row)
    events = variant.events * shares
    if last_hop != shares or copies != shares:
        raise BenchError(
            f"{variant.name}: {last_hop} shares done ({copies} deliveries) of {shares}"
        )
    if audited != events or distinct_audited != events:
        raise BenchError(
            f"{variant.name}: {audited} audit records ({distinct_audited}) of {events}"
        )
    if outbox_left or staged_left:
        raise BenchError(f"{variant.name}: {outbox_left} outbox, {staged_left} staged rows left")
