"""Idleness on the embedded broker is signalled by settlements and retries, not sampled."""

from __future__ import annotations

import asyncio

from blume_runtime.topology import QueueSpec
from blume_runtime.transport import Delivery, InMemoryTransport, OutgoingMessage

MESSAGE = OutgoingMessage("share.accepted", b"{}", "evt-1")


async def test_idle_waits_for_a_handler_and_wakes_when_it_settles() -> None:
    """While a delivery is being handled the broker is busy; its ack wakes the waiter."""
    transport = InMemoryTransport()
    release = asyncio.Event()

    async def consumer(delivery: Delivery) -> None:
        await release.wait()
        await delivery.ack()

    transport.subscribe(QueueSpec("probe", ("share.accepted",)), consumer)
    await transport.start()
    try:
        await transport.publish(MESSAGE)
        waiting = asyncio.create_task(transport.wait_idle())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        release.set()
        await asyncio.wait_for(waiting, timeout=1)
        assert transport.idle
    finally:
        await transport.stop()


async def test_a_scheduled_retry_keeps_the_broker_busy_until_it_is_handled() -> None:
    """A retry waiting out its delay is pending work: idle only once it was acked."""
    transport = InMemoryTransport()
    attempts: list[int] = []

    async def consumer(delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if len(attempts) == 1:
            await delivery.retry_later(0.1, error_class="smtp_unavailable")
        else:
            await delivery.ack()

    transport.subscribe(QueueSpec("probe", ("share.accepted",)), consumer)
    await transport.start()
    try:
        await transport.publish(MESSAGE)
        await asyncio.wait_for(transport.wait_idle(), timeout=2)
        assert attempts == [1, 2]
    finally:
        await transport.stop()
