"""Watching a run: progress lines while it goes, and waiting for the system to settle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Final

from blume_runtime.topology import QueueSpec

from tests.faults.broker import RabbitCluster
from tests.faults.plan import System
from tests.faults.report import TERMINAL
from tests.faults.stores import Stores
from tests.faults.traffic import PlannedShare

SETTLE_POLL_SECONDS: Final = 5.0
LATE_DUPLICATE_SECONDS: Final = 10.0
"""After settling, how long to wait for a late duplicate email."""
STALL_SECONDS: Final = 90.0
PROGRESS_SECONDS: Final = 10.0


async def progress(system: System, stores: Stores, shares: list[PlannedShare]) -> None:
    ids = [share.share_id for share in shares]
    while True:
        await asyncio.sleep(PROGRESS_SECONDS)
        states = await _states_or_empty(stores, ids)
        done = sum(1 for state in states.values() if state == "completed")
        print(
            f"  [{time.monotonic() - system.started:5.0f}s] {system.current}: published "
            f"{system.driver.published}/{len(shares)}, completed {done}, "
            f"emails {len(system.mail.received)}, events seen {len(system.bus.events)}"
        )


async def _states_or_empty(stores: Stores, ids: list[str]) -> dict[str, str]:
    try:
        return await stores.share_states(ids)
    except Exception:  # noqa: BLE001 - progress lines must survive a database restart
        return {}


def leftover_messages(cluster: RabbitCluster, services: Iterable[str]) -> dict[str, int]:
    """Ready plus unacknowledged messages on each running worker's queue and delay queues
    (not its dead-letter queue, which keeps what it holds). The broker definitions declare
    the queues of services the suite does not run too (the gateway's projection): what
    waits there waits for a process that is not part of the run."""
    owners = tuple(QueueSpec(name, ()).name for name in services)
    rows = cluster.queue_table(cluster.nodes[1], "messages_ready", "messages_unacknowledged")
    return {
        name: int(ready) + int(unacked)
        for name, ready, unacked in rows
        if _owned(name, owners) and "dlq" not in name.split(".")
    }


def _owned(queue: str, owners: tuple[str, ...]) -> bool:
    return any(queue == owner or queue.startswith(owner + ".") for owner in owners)


async def settle(
    system: System, stores: Stores, shares: list[PlannedShare], limit_seconds: float
) -> None:
    """Until every share is terminal and the worker queues are empty, or the time is up, or
    nothing has moved for ``STALL_SECONDS`` while messages sit only on consumer queues (a
    stall: nothing is waiting out a retry delay that could still move them)."""
    ids = [share.share_id for share in shares]
    consumer_queues = {QueueSpec(name, ()).name for name in system.workers.processes}
    deadline = time.monotonic() + limit_seconds
    last_change, last_seen = time.monotonic(), None
    while time.monotonic() < deadline:
        system.workers.restart_crashed()
        states = await _states_or_empty(stores, ids)
        terminal = sum(1 for state in states.values() if state in TERMINAL)
        left = await asyncio.to_thread(leftover_messages, system.cluster, system.workers.processes)
        if terminal == len(ids) and not any(left.values()):
            await asyncio.sleep(LATE_DUPLICATE_SECONDS)
            return
        busy = {name: n for name, n in left.items() if n}
        seen = (terminal, sorted(busy.items()), len(system.mail.received), len(system.bus.events))
        if seen != last_seen:
            print(f"  settling: {terminal}/{len(ids)} terminal, queues {busy or 'empty'}")
            last_change, last_seen = time.monotonic(), seen
        elif set(busy) <= consumer_queues and time.monotonic() - last_change > STALL_SECONDS:
            print(f"  stalled: nothing moved for {STALL_SECONDS:.0f}s; collecting what there is")
            return
        await asyncio.sleep(SETTLE_POLL_SECONDS)
    print(f"  not settled after {limit_seconds:.0f}s: collecting what there is")
