"""The shared runtime's own cost per delivery: this process's CPU, transactions and statements.

What is measured
----------------
The runtime with the least service possible around it: a worker (``blume_runtime.worker``)
whose one handler emits one ``share.completed`` per ``share.accepted``, on PostgreSQL, with
its outbox relay and its sweep running every second as in ``blume-share run``. Deliveries
are handed to the worker in waves of ``--concurrency`` (as a prefetch hands them over, so
the group commit batches them), each settled by the worker; published events go to an
in-memory transport, so the broker's share of the work is left out. What is left is what
every delivery of every worker pays the runtime: intake and envelope, producer verdict,
inbox claim, handler context, outbox row, commit, relay, settlement, log line and metrics.

Reported per delivery: CPU ms of this process (``time.process_time``: other processes on
the machine do not count, though a loaded machine still slows caches), transactions and
SQL statements (the runtime's own counters), and the idle CPU of the runtime over a few
seconds after the run (its background loops).

To compare two trees, run it in each, alternated; only the ratios within one window mean
anything. ``--loop uvloop`` runs it on uvloop's event loop instead of asyncio's (the one
``blume-share run`` uses today), to price that change. Run: ``uv run python -m
bench.runtime_delivery_cost [--deliveries N] [--concurrency C] [--rounds R] [--loop L]``;
uses ``BLUME_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``)
to create a throw-away database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Final

import uvloop
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import ShareAccepted, ShareCompleted
from blume_contracts.serialisation import event_body
from blume_runtime import metrics
from blume_runtime.db import Database, InboxEntry, OutboxMessage
from blume_runtime.identity import EMBEDDED_BROKER_USER
from blume_runtime.lifecycle import OutboxSweeper
from blume_runtime.logging import configure_logging
from blume_runtime.outbox import OutboxRelay
from blume_runtime.service import HandlerContext, Service
from blume_runtime.settings import Settings
from blume_runtime.testing import FakeDelivery, RecordingTransport
from blume_runtime.worker import Worker
from sqlalchemy import text
from sqlmodel import SQLModel

from bench.harness import DEFAULT_AMQP, DEFAULT_POSTGRES, Isolation

SCHEMA: Final = "bench_runtime"
SHARE: Final = "shr_" + "b" * 32
IDLE_SECONDS: Final = 3.0


def _service() -> Service:
    service = Service(SCHEMA)

    @service.handles("share.accepted")
    async def complete(event: CloudEvent[ShareAccepted], ctx: HandlerContext) -> None:
        completed_at = datetime.now(UTC)
        ctx.emit(
            "share.completed",
            ShareCompleted(
                share_id=event.data.share_id, method="external_link", completed_at=completed_at
            ),
        )

    return service


def _delivery(number: int, round_: int) -> FakeDelivery:
    event = CloudEvent[ShareAccepted](
        id=f"evt-{round_}-{number}",
        source="/blume-share/share_dispatcher",
        type="share.accepted",
        time=datetime.now(UTC),
        tenantid="demo-hospital",
        correlationid=f"corr-{number}",
        data=ShareAccepted(share_id=SHARE, method="external_link"),
    )
    return FakeDelivery(
        event_body(event),
        message_id=event.id,
        routing_key=event.type,
        producer=EMBEDDED_BROKER_USER,
    )


async def _tables(db: Database) -> None:
    async with db.engine.begin() as connection:
        await connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        await connection.run_sync(
            SQLModel.metadata.create_all,
            tables=[InboxEntry.__table__, OutboxMessage.__table__],  # type: ignore[attr-defined]
        )


def _counted() -> tuple[float, float]:
    return metrics.DB_TRANSACTIONS._value.get(), metrics.DB_STATEMENTS._value.get()


async def _round(worker: Worker, deliveries: int, concurrency: int, round_: int) -> list[float]:
    """One round: CPU ms, transactions and statements per delivery."""
    waves = [
        [_delivery(number, round_) for number in range(start, min(start + concurrency, deliveries))]
        for start in range(0, deliveries, concurrency)
    ]
    transactions, statements = _counted()
    cpu = time.process_time()
    for wave in waves:
        await asyncio.gather(*(worker(delivery) for delivery in wave))
    cpu = time.process_time() - cpu
    after_transactions, after_statements = _counted()
    unsettled = [d for wave in waves for d in wave if d.settlement != "ack"]
    if unsettled:
        raise RuntimeError(f"{len(unsettled)} deliveries not acked")
    return [
        1000 * cpu / deliveries,
        (after_transactions - transactions) / deliveries,
        (after_statements - statements) / deliveries,
    ]


async def _run(url: str, deliveries: int, concurrency: int, rounds: int) -> None:
    with TemporaryDirectory() as state:
        settings = Settings(state_dir=Path(state), prefetch=concurrency)
        db = Database(url, schema=SCHEMA)
        try:
            await _tables(db)
            transport = RecordingTransport()
            relay = OutboxRelay(db, transport)
            worker = Worker(_service(), db, relay, settings)
            sweeper = OutboxSweeper(relay, settings.outbox_poll_seconds)
            await sweeper.start()
            try:
                await _round(worker, min(deliveries, 200), concurrency, -1)  # warm-up
                results = [
                    await _round(worker, deliveries, concurrency, round_)
                    for round_ in range(rounds)
                ]
                transport.published.clear()
                idle_cpu = time.process_time()
                await asyncio.sleep(IDLE_SECONDS)
                idle_cpu = time.process_time() - idle_cpu
            finally:
                await sweeper.stop()
        finally:
            await db.dispose()
    _report(results, deliveries, concurrency, 1000 * idle_cpu / IDLE_SECONDS)


def _report(results: list[list[float]], deliveries: int, concurrency: int, idle: float) -> None:
    def median(column: int) -> float:
        return statistics.median(result[column] for result in results)

    print(
        f"runtime per delivery ({len(results)} rounds of {deliveries}, "
        f"{concurrency} at a time; medians)"
    )
    print(f"  CPU ms, this process        {median(0):.3f}")
    print(f"    each round                {', '.join(f'{r[0]:.3f}' for r in results)}")
    print(f"  transactions                {median(1):.3f}")
    print(f"  SQL statements              {median(2):.3f}")
    print(f"  idle CPU ms per second      {idle:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--deliveries", type=int, default=2000, help="per round")
    parser.add_argument("--concurrency", type=int, default=16, help="deliveries handed at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    options = parser.parse_args(argv)
    # Production's log lines are part of the cost: written as in production, to nowhere.
    configure_logging("INFO", "json")
    isolation = Isolation(os.environ.get("BLUME_TEST_POSTGRES_URL", DEFAULT_POSTGRES), DEFAULT_AMQP)
    stderr = sys.stderr
    try:
        url = isolation.create_database()
        with open(os.devnull, "w") as nowhere:
            sys.stderr = nowhere
            try:
                run = uvloop.run if options.loop == "uvloop" else asyncio.run
                run(_run(url, options.deliveries, options.concurrency, options.rounds))
            finally:
                sys.stderr = stderr
    finally:
        isolation.remove_all()


if __name__ == "__main__":
    main()
