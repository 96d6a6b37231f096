"""End-to-end share throughput and latency, against raw aio-pika on the same broker.

What is compared
----------------
*Product*: every worker ``blume-share run`` runs (``blume_share.services.SERVICES``:
share_dispatcher, link_issuer, notifier, audit_sink, ...) in this process, wired exactly as
``blume-share run`` wires them (``Runtime`` over RabbitMQ and PostgreSQL, the SMTP mailer).
N ``study.send.requested`` events, built from the bundled example like ``blume-share send``
builds them, are published one after the other with publisher confirms through a separate
publish-only ``RabbitTransport``. A share is done when a local aiosmtpd server accepts its
email (Message-ID ``<shr_….link@…>``).

*Raw baseline*: plain aio-pika on the same broker, in the same run, with what the product
is required to guarantee on the wire and nothing else: the same message bodies (so the same
size), persistent messages, publisher confirms, durable quorum queues, the same prefetch,
a topic exchange, and the same hop count as the product's critical path. That path is
request -> dispatcher -> link_issuer -> notifier -> email: three consumer hops, each
publishing the next message (with a confirm) before acking. The baseline is a chain of
three quorum queues where the consumer of queue k republishes to queue k+1, waits for the
confirm, then acks; a message is done when the consumer of the last queue receives it.

Why it is fair
--------------
Both sides run on one broker, one machine and one Python process with the same publisher
pattern (sequential, confirmed), the same bodies, the same durability and the same number
of broker round trips on the critical path, and both are timed the same way: throughput is
N / (last completion - first publish) and latency is completion - publish, per message.
Each side gets an untimed warm-up batch first. Everything the product does beyond moving
messages (validation, PostgreSQL transactions with inbox and outbox, link minting and
sealing, rendering and sending an email, the audit chain fed a copy of every event, logs)
is what the ratio product / raw prices. The raw side is usually bounded by its sequential
confirmed publisher (compare "publishing alone" with the whole window), so the ratio errs in
the product's favour. Neither side is judged on absolute time: the run fails only when the
product loses or duplicates an email, or something breaks.

Isolation: a fresh PostgreSQL database and fresh RabbitMQ vhosts (one per side), removed at
the end even on Ctrl-C, and an SMTP server on a free local port.

What a share costs
------------------
Around the measured batch (and once the audit chain is quiet after it) ``bench.costs``
reads the CPU of the workers, RabbitMQ's ``beam.smp`` and PostgreSQL from ``/proc``, and the
runtime's counters of deliveries, transactions and SQL statements: per share, counted. Then
an open-loop run at half the sustained rate (``bench.open_loop``, ``--soak-minutes``) gives
p50 and p99 from request to email without a burst, and every worker's memory growth. The
sustained rate counts a batch's whole work, until its last audit record is sealed: a burst's
email rate is higher, because the audit records' sealing waits behind the emails, and
half of it can be more than the workers keep up with for minutes on end.

Run: ``uv run python -m bench.throughput [--shares N | --quick] [--processes]
[--soak-minutes M]``. By default
every worker runs in this one process (``blume-share run``); ``--processes`` starts one
``blume-share run <worker>`` process per worker, the deployed topology.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from aiosmtpd.controller import Controller
from blume_notifier.render import link_message_id
from blume_runtime.app import Runtime
from blume_runtime.db import Database
from blume_runtime.logging import configure_logging
from blume_runtime.rabbit import RabbitTransport
from blume_runtime.settings import Settings
from blume_runtime.topology import QUEUE_PREFIX
from blume_share.requests import PreparedRequest
from blume_share.schema import upgrade
from blume_share.services import SERVICES
from cryptography.fernet import Fernet
from pydantic import SecretStr

from bench.costs import IDLE_SECONDS, Costs, Meter
from bench.harness import (
    DEFAULT_AMQP,
    DEFAULT_POSTGRES,
    BenchError,
    Isolation,
    SmtpSink,
    start_smtp,
)
from bench.measuring import ProductRun, Send, drive, fresh_requests
from bench.open_loop import OpenLoop, open_loop
from bench.raw_baseline import HOPS, RawRun, run_raw
from bench.throughput_report import postgres_version, render_report
from bench.worker_processes import spawn_worker_processes, stop_worker_processes, wait_for_workers

DEFAULT_SHARES: Final = 300
QUICK_SHARES: Final = 50
DEFAULT_SOAK_MINUTES: Final = 10.0
QUICK_SOAK_MINUTES: Final = 0.5


# ----------------------------------------------------------------------------- product


def product_settings(amqp_url: str, database_url: str, smtp_url: str) -> Settings:
    return Settings(
        amqp_url=SecretStr(amqp_url),
        database_url=SecretStr(database_url),
        smtp_url=smtp_url,
        token_sealing_key=SecretStr(Fernet.generate_key().decode()),
        log_level="WARNING",
        log_format="json",
    )


async def _quiet(
    meter: Meter,
    publisher: RabbitTransport,
    *,
    steady_seconds: float = 3.0,
    limit: float = 120.0,
) -> float:
    """Wait until every worker's queue is empty and no delivery has been settled nor audit
    record sealed for ``steady_seconds``: what a batch causes after its last email (audit
    copies, sealing) belongs to it. Returns when that work was last seen moving."""
    started = time.perf_counter()
    last: tuple[float, float] | None = None
    steady_since = started
    while time.perf_counter() - started < limit:
        counts = await asyncio.to_thread(meter.counts)
        now = (counts["deliveries"], counts["sealed"])
        if now != last:
            last, steady_since = now, time.perf_counter()
        elif time.perf_counter() - steady_since >= steady_seconds:
            depths = [await publisher.queue_depth(f"{QUEUE_PREFIX}{name}") for name in SERVICES]
            if not any(depths):
                return steady_since
        await asyncio.sleep(0.25)
    print(f"  the workers were still busy after {limit:.0f} s; going on", file=sys.stderr)
    return time.perf_counter()


async def run_product(
    settings: Settings,
    sink: SmtpSink,
    *,
    shares: int,
    warmup: int,
    batch_limit: float,
    settle: float,
    progress_every: float,
    diagnose: Callable[[], str],
    separate_processes: bool = False,
    soak_seconds: float = 0.0,
) -> ProductRun:
    assert settings.amqp_url is not None
    assert settings.database_url is not None
    db = Database(settings.database)
    runtime = (
        None
        if separate_processes
        else Runtime(settings, [build(settings) for build in SERVICES.values()], db)
    )
    processes: list[subprocess.Popen[bytes]] = []
    state_dir = tempfile.mkdtemp(prefix="blume-bench-")
    publisher = RabbitTransport(settings.amqp_url.get_secret_value())
    by_message_id: dict[str, str] = {}
    soak: OpenLoop | None = None

    def batch(requests: list[PreparedRequest]) -> list[tuple[str, Send]]:
        items: list[tuple[str, Send]] = []
        for request in requests:
            message_id = link_message_id(request.share_id, settings.mail_from)
            by_message_id[message_id] = request.share_id
            message = request.message()

            async def send(message: Any = message) -> None:
                await publisher.publish(message)

            items.append((message_id, send))
        return items

    try:
        if runtime is not None:
            await runtime.start()
            meter = Meter([os.getpid()], settings.database_url.get_secret_value())
            names = ["all workers (this process)"]
        else:
            processes, ports = spawn_worker_processes(settings, state_dir)
            await wait_for_workers(settings, state_dir)
            pids = [process.pid for process in processes]
            meter = Meter(pids, settings.database_url.get_secret_value(), ports)
            names = list(SERVICES)
        await publisher.connect()
        common: dict[str, Any] = {
            "batch_limit": batch_limit,
            "progress_every": progress_every,
            "diagnose": diagnose,
        }
        if warmup:
            await drive("product warm-up", batch(fresh_requests(warmup)), sink.arrivals, **common)
        await _quiet(meter, publisher)
        idle_start = await asyncio.to_thread(meter.snapshot)
        await asyncio.sleep(IDLE_SECONDS)
        before = await asyncio.to_thread(meter.snapshot)
        idle = Costs.between(idle_start, before, 1)
        batch_started = time.perf_counter()
        figures = await drive("product", batch(fresh_requests(shares)), sink.arrivals, **common)
        work_done = await _quiet(meter, publisher)
        after = await asyncio.to_thread(meter.snapshot)
        costs = Costs.between(before, after, shares)
        # Half of the rate at which *all* of a batch's work is done (its audit records and
        # sealing too), not of the email rate: a burst defers the audit work past its last
        # email, and a steady run has to keep up with it.
        sustained = shares / max(work_done - batch_started, figures.elapsed)
        rate = sustained / 2
        count = max(1, round(rate * soak_seconds))
        print(f"product: open-loop at {rate:.1f}/s for {count} shares ...", file=sys.stderr)

        def rss() -> dict[str, int]:
            return dict(zip(names, meter.rss().values(), strict=True))

        soak = await open_loop(
            batch(fresh_requests(count)),
            sink.arrivals,
            rate=rate,
            rss=rss,
            batch_limit=soak_seconds + batch_limit,
        )
        # A duplicate would arrive after the original: give redeliveries time to show.
        await asyncio.sleep(settle)
    finally:
        await publisher.stop()
        if runtime is not None:
            await runtime.stop()
        stop_worker_processes(processes)
        shutil.rmtree(state_dir, ignore_errors=True)
        await db.dispose()
    accepted, copies = sink.tally()
    return ProductRun(
        figures=figures,
        expected=len(by_message_id),
        accepted=accepted,
        distinct=len(copies),
        duplicated={key: count for key, count in copies.items() if count > 1},
        unexpected=sorted(key for key in copies if key not in by_message_id),
        prefetch=settings.prefetch,
        smtp_connections=sink.connections,
        services=list(SERVICES),
        separate_processes=separate_processes,
        costs=costs,
        idle=idle,
        soak=soak,
        sustained=sustained,
    )


# -------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description="Shares/s end to end vs raw aio-pika on the same broker.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--shares", type=int, default=DEFAULT_SHARES, help="measured shares (default 300)"
    )
    size.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_SHARES} shares")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed warm-up per side (default N/10, <=20)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds per batch (default 600)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds to wait for late duplicate emails after the last one (default 3)",
    )
    parser.add_argument(
        "--processes",
        action="store_true",
        help="run each worker in its own blume-share process, as deployed (default: one process)",
    )
    parser.add_argument(
        "--soak-minutes",
        type=float,
        default=None,
        help="open-loop run at half the sustained rate: p50/p99 and memory growth "
        f"(default {DEFAULT_SOAK_MINUTES:g}, --quick {QUICK_SOAK_MINUTES:g})",
    )
    args = parser.parse_args(argv)
    if args.soak_minutes is None:
        args.soak_minutes = QUICK_SOAK_MINUTES if args.quick else DEFAULT_SOAK_MINUTES
    if args.quick:
        args.shares = QUICK_SHARES
    if args.shares < 1:
        parser.error("--shares must be at least 1")
    if args.warmup is None:
        args.warmup = min(20, max(1, args.shares // 10))
    return args


async def run_both(
    args: argparse.Namespace,
    isolation: Isolation,
    sink: SmtpSink,
    *,
    product_amqp: str,
    raw_amqp: str,
    database_url: str,
    smtp_url: str,
) -> tuple[ProductRun, RawRun, int]:
    progress_every = 2.0 if args.quick else 5.0
    settings = product_settings(product_amqp, database_url, smtp_url)
    raw_messages = fresh_requests(args.warmup + args.shares)
    bodies = [(request.event.id, request.message().body) for request in raw_messages]
    body_size = len(bodies[-1][1])

    print(f"raw aio-pika: {args.shares} messages through {HOPS} hops ...", file=sys.stderr)
    raw = await run_raw(
        raw_amqp,
        bodies=bodies[args.warmup :],
        warmup_bodies=bodies[: args.warmup],
        prefetch=settings.prefetch,
        batch_limit=args.timeout,
        progress_every=progress_every,
        diagnose=lambda: isolation.queue_depths(raw_amqp),
    )
    print(f"product: {args.shares} shares end to end ...", file=sys.stderr)
    product = await run_product(
        settings,
        sink,
        shares=args.shares,
        warmup=args.warmup,
        batch_limit=args.timeout,
        settle=args.settle,
        progress_every=progress_every,
        diagnose=lambda: isolation.queue_depths(product_amqp),
        separate_processes=args.processes,
        soak_seconds=args.soak_minutes * 60,
    )
    return product, raw, body_size


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("WARNING", "json")
    isolation = Isolation(
        os.environ.get("BLUME_BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        os.environ.get("BLUME_BENCH_AMQP_URL", DEFAULT_AMQP),
    )
    sink = SmtpSink()
    controller: Controller | None = None
    try:
        database_url = isolation.create_database()
        upgrade(database_url)
        product_amqp = isolation.create_vhost("product")
        raw_amqp = isolation.create_vhost("raw")
        controller, smtp_url = start_smtp(sink)
        postgres = postgres_version(database_url)
        product, raw, body_size = asyncio.run(
            run_both(
                args,
                isolation,
                sink,
                product_amqp=product_amqp,
                raw_amqp=raw_amqp,
                database_url=database_url,
                smtp_url=smtp_url,
            )
        )
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not leave the database or the vhosts behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if controller is not None:
                controller.stop()
            isolation.remove_all()
        finally:
            signal.signal(signal.SIGINT, previous)
    print(render_report(product, raw, body_size=body_size, warmup=args.warmup, postgres=postgres))
    if not product.exact:
        print(
            f"FAIL: expected exactly {product.expected} emails with distinct Message-IDs; "
            f"got {product.accepted} ({product.distinct} distinct, "
            f"duplicated {product.duplicated}, unexpected {product.unexpected[:5]})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
