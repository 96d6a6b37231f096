"""One lifecycle for everything a process runs: start in order, stop in reverse.

The runtime owns every long-lived part the same way: the workers (the transport consuming
their queues), the outbox sweeper, the ops port, a service's background loops (the audit
sealer) and the gateway's web server. Each is a ``Component``; the runtime starts them in
the order it holds them and stops them in reverse, so the last to start (the web server,
taking requests) is the first to stop, while what it committed can still be published.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Protocol

import structlog

from blume_runtime.outbox import OutboxRelay
from blume_runtime.transport import Transport

log = structlog.get_logger("runtime")


class Component(Protocol):
    """Something with a life the runtime owns."""

    async def start(self) -> None:
        """Begin; return once running (or raise: the process then does not start)."""

    async def stop(self) -> None:
        """End, finishing what is in flight; called once, whether or not start succeeded."""


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel a background loop and wait until it has ended (nothing if there is none)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Workers:
    """The services' workers: consuming starts with the transport and ends with it."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def start(self) -> None:
        await self._transport.start()

    async def stop(self) -> None:
        await self._transport.stop()


class OutboxSweeper:
    """The relay's background loop: deletes published rows, publishes stranded ones."""

    def __init__(self, relay: OutboxRelay, interval_seconds: float) -> None:
        self._relay = relay
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._relay.run_forever(self._interval))

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None


async def start_all(components: Sequence[Component]) -> list[Component]:
    """Start each in order; on a failure stop those already started (reverse) and raise."""
    started: list[Component] = []
    try:
        for component in components:
            await component.start()
            started.append(component)
    except BaseException:
        await stop_all(started)
        raise
    return started


async def stop_all(components: Sequence[Component]) -> None:
    """Stop each in reverse order; one failing to stop does not keep the others running."""
    failures: list[BaseException] = []
    for component in reversed(components):
        try:
            await component.stop()
        except Exception as error:  # noqa: BLE001 - the rest must still stop; raised after
            log.warning("component failed to stop", component=type(component).__name__)
            failures.append(error)
    if failures:
        raise failures[0]
