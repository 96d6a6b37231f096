"""A consumer on a real broker for the transport's integration tests."""

from __future__ import annotations

import asyncio

from blume_runtime.rabbit import RabbitTransport
from blume_runtime.topology import QueueSpec
from blume_runtime.transport import DeadLetterCause, Delivery, OutgoingMessage


async def collect(
    amqp_url: str, spec: QueueSpec, settle: str, count: int, *messages: OutgoingMessage
) -> list[Delivery]:
    """Consume ``spec`` with a transport that settles each delivery the given way.

    ``settle`` is ``ack``, ``dead_letter`` or ``retry`` (retried until the third attempt).
    """
    received: list[Delivery] = []
    done = asyncio.Event()
    transport = RabbitTransport(amqp_url, retry_delay_seconds=0.2)

    async def consumer(delivery: Delivery) -> None:
        received.append(delivery)
        if settle == "retry" and delivery.attempt < 3:
            await delivery.retry_later(0.2, error_class="unexpected")
        elif settle == "dead_letter":
            await delivery.dead_letter(DeadLetterCause.MALFORMED)
        else:
            await delivery.ack()
        if len(received) >= count:
            done.set()

    transport.subscribe(spec, consumer)
    await transport.start()
    try:
        for message in messages:
            await transport.publish(message)
        await asyncio.wait_for(done.wait(), timeout=30)
    finally:
        await transport.stop()
    return received
