"""The faults, one after another, while shares keep arriving.

Where the broker is concerned, the workers all connect to node 1 and the suite's upstream
client (publisher and observer) to node 2, which is never faulted: requests keep arriving
through the surviving nodes while node 1 is down, as they would from upstream. Node 1 is
the one that is stopped (``stop_app``), restarted (its whole VM) and, after its quorum
leaders were rebalanced over the cluster, SIGKILLed: the harshest single-node loss, which
takes worker connections and queue leaders with it while the quorum of the other two keeps
every queue available.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tests.faults.broker import RabbitCluster, RabbitNode
from tests.faults.database import PostgresCluster
from tests.faults.mail import MailServer
from tests.faults.poison import PoisonCase
from tests.faults.report import FaultRecord
from tests.faults.traffic import Bus, Driver
from tests.faults.workers import Readiness, Workers


@dataclass
class Timings:
    kill_delay: float
    broker_down: float
    smtp_outage: float
    gap: float
    reattach_deadline: float


@dataclass
class System:
    """Everything a fault can act on."""

    cluster: RabbitCluster
    postgres: PostgresCluster
    mail: MailServer
    workers: Workers
    readiness: Readiness
    bus: Bus
    driver: Driver
    poison: list[PoisonCase]
    send_poison: Callable[[], Awaitable[str]]
    """Publishes ``poison`` (with the corpus's own publisher, when the corpus is used)."""
    timings: Timings
    started: float = field(default_factory=time.monotonic)
    notifier_kills: list[float] = field(default_factory=list)
    current: str = "warm-up"


@dataclass(frozen=True)
class Fault:
    name: str
    estimate: float
    """Seconds it usually takes, to pace the shares so that they span every fault."""
    act: Callable[[System], Awaitable[str]]
    broker_fault: bool = False


def _kill_worker(name: str) -> Callable[[System], Awaitable[str]]:
    async def act(system: System) -> str:
        await asyncio.to_thread(system.workers.kill, name)
        if name == "notifier":
            system.notifier_kills.append(time.monotonic())
        await asyncio.sleep(system.timings.kill_delay)
        system.workers.start(name)
        return f"restarted after {system.timings.kill_delay:.0f}s"

    return act


async def _down_and_up(
    system: System, down: Callable[[RabbitNode], None], up: Callable[[RabbitNode], None]
) -> RabbitNode:
    """Take the workers' node down, keep it down for ``broker_down`` seconds, bring it up."""
    node = system.cluster.nodes[0]
    await asyncio.to_thread(down, node)
    await asyncio.sleep(system.timings.broker_down)
    await asyncio.to_thread(up, node)
    return node


async def _stop_app(system: System) -> str:
    node = await _down_and_up(system, system.cluster.stop_app, system.cluster.start_app)
    return f"{node.name} app down {system.timings.broker_down:.0f}s"


async def _restart_node(system: System) -> str:
    node = await _down_and_up(system, system.cluster.stop_node, system.cluster.start_node)
    return f"{node.name} VM stopped and started"


async def _kill_node(system: System) -> str:
    cluster = system.cluster
    target, survivor = cluster.nodes[0], cluster.nodes[1]
    await asyncio.to_thread(cluster.rebalance_quorum_leaders, survivor)
    rows = await asyncio.to_thread(cluster.queue_table, survivor, "leader")
    leaders = sum(1 for row in rows if row[-1] == target.name and row[0].startswith("blume.share."))
    await _down_and_up(system, cluster.kill_node, cluster.start_node)
    return f"SIGKILL {target.name}, leader of {leaders} blume queues"


async def _restart_postgres(system: System) -> str:
    await asyncio.to_thread(system.postgres.restart_immediate)
    return "pg_ctl restart -m immediate"


async def _smtp_outage(system: System) -> str:
    system.mail.refuse()
    await asyncio.sleep(system.timings.smtp_outage)
    system.mail.accept()
    return f"connections refused for {system.timings.smtp_outage:.0f}s"


async def _poison(system: System) -> str:
    note = await system.send_poison()
    kinds = len({case.kind for case in system.poison})
    return f"{len(system.poison)} messages, {kinds} kinds" + (f"; {note}" if note else "")


def fault_plan(services: list[str], timings: Timings) -> list[Fault]:
    restart = timings.kill_delay + 10
    broker = 2 * timings.broker_down + 30
    return [
        *(Fault(f"SIGKILL {name}", restart, _kill_worker(name)) for name in services),
        Fault("broker stop_app/start_app", broker, _stop_app, broker_fault=True),
        Fault("broker full restart", broker, _restart_node, broker_fault=True),
        Fault("cluster node killed", broker, _kill_node, broker_fault=True),
        Fault("PostgreSQL restart -m immediate", 15, _restart_postgres),
        Fault("SMTP outage", timings.smtp_outage + 5, _smtp_outage),
        Fault("poison messages", 10, _poison),
    ]


async def run_plan(
    system: System, plan: list[Fault], on_fault: Callable[[FaultRecord], None]
) -> list[FaultRecord]:
    """Each fault, then the time for every worker's consumers to be back, then a gap."""
    records = []
    remaining = sum(fault.estimate + system.timings.gap for fault in plan) + system.timings.gap
    await _pace_and_wait(system, remaining, system.timings.gap)
    remaining -= system.timings.gap
    for fault in plan:
        system.current = fault.name
        print(f"== fault: {fault.name} ({system.driver.published} shares published)")
        began = time.monotonic()
        _set_rate(system, remaining)
        note = await fault.act(system)
        recovered = time.monotonic()
        reattached = await system.readiness.wait_all(system.timings.reattach_deadline)
        record = FaultRecord(
            name=fault.name,
            started_at=began - system.started,
            seconds=recovered - began,
            broker_fault=fault.broker_fault,
            reattached=reattached,
            note=note,
        )
        on_fault(record)
        records.append(record)
        remaining -= fault.estimate + system.timings.gap
        system.current = f"after {fault.name}"
        await _pace_and_wait(system, remaining + system.timings.gap, system.timings.gap)
    system.current = "publishing the rest"
    return records


def _set_rate(system: System, remaining_seconds: float) -> None:
    """Spread the shares still to publish over the faults still to come."""
    system.driver.rate = max(0.2, system.driver.remaining / max(remaining_seconds, 1.0))


async def _pace_and_wait(system: System, remaining_seconds: float, seconds: float) -> None:
    _set_rate(system, remaining_seconds)
    await asyncio.sleep(seconds)
