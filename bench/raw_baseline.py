"""The raw side of ``throughput``: plain aio-pika through a chain of quorum queues with the
product's hop count, durability and confirms, and nothing else."""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Final

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from bench.measuring import Figures, Send, drive

HOPS: Final = 3
"""Consumer hops on the product's critical path: dispatcher, link_issuer, notifier."""
RAW_EXCHANGE: Final = "bench.raw"


# -------------------------------------------------------------------------- raw aio-pika


CONTENT_TYPE: Final = "application/cloudevents+json"


def persistent_sends(
    exchange: AbstractExchange,
    routing_key: str,
    items: Sequence[tuple[str, bytes]],
    *,
    user_id: str | None = None,
    correlate: bool = False,
) -> list[tuple[str, Send]]:
    """One confirmed, persistent publish per (message id, body), for ``drive``; with
    ``correlate`` the message id is also the correlation id (kept across hops)."""
    sends: list[tuple[str, Send]] = []
    for message_id, body in items:
        message = aio_pika.Message(
            body,
            message_id=message_id,
            correlation_id=message_id if correlate else None,
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            user_id=user_id,
        )

        async def send(message: aio_pika.Message = message) -> None:
            await exchange.publish(message, routing_key=routing_key)

        sends.append((message_id, send))
    return sends


@dataclass(frozen=True)
class RawRun:
    figures: Figures
    duplicates: int
    server: Mapping[str, Any]


def _hop_queue(hop: int) -> str:
    return f"bench.raw.hop{hop}"


def _hop_key(hop: int) -> str:
    return f"bench.hop{hop}"


async def run_raw(
    amqp_url: str,
    *,
    bodies: Sequence[tuple[str, bytes]],
    warmup_bodies: Sequence[tuple[str, bytes]],
    prefetch: int,
    batch_limit: float,
    progress_every: float,
    diagnose: Callable[[], str],
    window: Callable[[], AbstractAsyncContextManager[object]] | None = None,
) -> RawRun:
    """Move ``bodies`` through the chain after an untimed ``warmup_bodies`` batch.

    ``window``, if given, is entered around the timed batch only (``bench.ceiling`` reads
    the broker's CPU there).
    """
    arrivals: dict[str, float] = {}
    copies: collections.Counter[str] = collections.Counter()

    def forward(hop: int, exchange: AbstractExchange) -> Callable[[AbstractIncomingMessage], Any]:
        async def on_message(message: AbstractIncomingMessage) -> None:
            if hop < HOPS:
                await exchange.publish(
                    aio_pika.Message(
                        message.body,
                        message_id=message.message_id,
                        content_type=message.content_type,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=_hop_key(hop + 1),
                )
            else:
                key = message.message_id or ""
                arrivals.setdefault(key, time.perf_counter())
                copies[key] += 1
            await message.ack()

        return on_message

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            RAW_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        for hop in range(1, HOPS + 1):
            queue = await channel.declare_queue(
                _hop_queue(hop), durable=True, arguments={"x-queue-type": "quorum"}
            )
            await queue.bind(exchange, routing_key=_hop_key(hop))
        for hop in range(1, HOPS + 1):
            consumer_channel = await connection.channel(publisher_confirms=True)
            await consumer_channel.set_qos(prefetch_count=prefetch)
            hop_exchange = await consumer_channel.get_exchange(RAW_EXCHANGE)
            hop_queue = await consumer_channel.get_queue(_hop_queue(hop))
            await hop_queue.consume(forward(hop, hop_exchange))

        def batch(items: Sequence[tuple[str, bytes]]) -> list[tuple[str, Send]]:
            return persistent_sends(exchange, _hop_key(1), items)

        def seen() -> Mapping[str, float]:
            return arrivals

        common: dict[str, Any] = {
            "batch_limit": batch_limit,
            "progress_every": progress_every,
            "diagnose": diagnose,
        }
        if warmup_bodies:
            await drive("raw warm-up", batch(warmup_bodies), seen, **common)
        async with window() if window is not None else contextlib.nullcontext():
            figures = await drive("raw", batch(bodies), seen, **common)
        transport = connection.transport
        server: Mapping[str, Any] = (
            dict(transport.connection.server_properties) if transport is not None else {}
        )
    finally:
        await connection.close()
    return RawRun(
        figures=figures,
        duplicates=sum(count - 1 for count in copies.values()),
        server=server,
    )
