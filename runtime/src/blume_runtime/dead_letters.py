"""Inspecting and replaying the per-service dead-letter queues (ops tooling over aio-pika).

Listing never shows bodies (they may hold PHI): only ids, types and why they died.
Replaying moves each message back onto its service queue with publisher confirms, then
removes it from the DLQ, so a crash mid-replay can duplicate but never lose a message;
consumers dedupe by event id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from blume_runtime.topology import QueueSpec
from blume_runtime.transport import ATTEMPT_HEADER


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message_id: str | None
    routing_key: str | None
    reason: str | None
    """Why the broker dead-lettered it: rejected, expired, delivery_limit."""


@dataclass(frozen=True, slots=True)
class DeadLetterQueue:
    service: str
    depth: int
    sample: list[DeadLetter]


def _death(message: AbstractIncomingMessage) -> tuple[str | None, str | None]:
    deaths: Any = (message.headers or {}).get("x-death") or []
    if deaths and isinstance(deaths, list) and isinstance(deaths[0], dict):
        first = deaths[0]
        keys = first.get("routing-keys") or []
        original = str(keys[0]) if keys else None
        return str(first.get("reason")), original
    return None, message.routing_key


async def list_dead_letters(
    url: str, services: list[str], sample: int = 0
) -> list[DeadLetterQueue]:
    """Depth of each service's DLQ, and the first ``sample`` messages' ids (not bodies)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queues = []
        for service in services:
            spec = QueueSpec(service, ())
            try:
                queue = await channel.declare_queue(spec.dead_letter_queue, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                channel = await connection.channel()
                continue  # the service never ran against this broker
            depth = queue.declaration_result.message_count or 0
            peeked: list[DeadLetter] = []
            held: list[AbstractIncomingMessage] = []
            for _ in range(min(sample, depth)):
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                held.append(message)
                reason, routing_key = _death(message)
                peeked.append(DeadLetter(message.message_id, routing_key, reason))
            for message in held:  # back where they were: listing changes nothing
                await message.nack(requeue=True)
            queues.append(DeadLetterQueue(service, depth, peeked))
        return queues


async def replay(url: str, service: str, limit: int | None = None) -> int:
    """Move up to ``limit`` dead letters back onto the service queue; return how many."""
    spec = QueueSpec(service, ())
    connection = await aio_pika.connect(url)
    moved = 0
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        dlq = await channel.declare_queue(spec.dead_letter_queue, passive=True)
        while limit is None or moved < limit:
            message = await dlq.get(no_ack=False, fail=False)
            if message is None:
                break
            headers = {
                key: value
                for key, value in (message.headers or {}).items()
                if key not in {"x-death", ATTEMPT_HEADER}
            }
            await channel.default_exchange.publish(
                aio_pika.Message(
                    message.body,
                    message_id=message.message_id,
                    content_type=message.content_type,
                    headers=headers,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=spec.name,
            )
            await message.ack()
            moved += 1
    return moved
