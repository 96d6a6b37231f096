"""Message-handling latency under ``blume-share run`` with and without a header flood.

What is measured
----------------
One ``blume-share run`` process (every worker and the access gateway on one event loop,
as issue 12 item 9 describes) on real RabbitMQ, PostgreSQL and an aiosmtpd SMTP server.
Shares are published one at a time at a steady pace; a share's latency is the time from
publishing its ``study.send.requested`` to this process receiving its ``share.completed``
(an observer queue bound to ``blume.share``). Three phases in the same run, same process:

1. *quiet*: the shares alone;
2. *plain*: the same number of shares while flood processes hammer the gateway with
   ``GET /blume/studies/<id>`` (a page that reads the patient's cookie) carrying a Cookie
   header just under the 8 KiB per-header cap of plain letters: the load of the requests
   themselves, nothing for the cookie parser to chew on;
3. *crafted*: the same, the cookie value a double-quoted run of backslashes, built for
   CVE-2024-7592 (Python's quadratic cookie unquoting, unfixed in the 3.11.7 here): ~0.2 s
   of CPU per request in ``http.cookies._unquote`` if it reaches it; the gateway's
   outermost layer drops quoted cookie values first.

The difference between *plain* and *crafted* is what the CVE still costs; between *quiet*
and *plain*, what any flood of requests costs a loop shared with the workers (on a
two-core machine the flood clients take CPU too).

The flood runs in separate processes (not threads of this one), so the observer's clock is
not slowed by it. Reported: latency median, p90, p99 and max per phase, the flood's
request rate and status codes, and the CPU the ``run`` process used per phase.

Run: ``uv run python -m bench.header_flood [--shares N] [--interval S] [--flooders K]``;
uses ``BLUME_TEST_POSTGRES_URL`` and ``BLUME_TEST_AMQP_URL`` (the test defaults) to create
a throw-away database and vhost, removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aio_pika
from blume_runtime.rabbit import RabbitTransport
from cryptography.fernet import Fernet

from bench.flooder import COOKIE_BUDGET, flood
from bench.harness import (
    DEFAULT_AMQP,
    DEFAULT_POSTGRES,
    BenchError,
    Isolation,
    SmtpSink,
    free_port,
    start_smtp,
)
from bench.measuring import fresh_requests


@dataclass
class Phase:
    label: str
    latencies: list[float]
    seconds: float
    run_cpu_seconds: float
    flood_requests: int = 0
    flood_statuses: dict[int, int] | None = None
    flood_slowest_ms: int = 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def _phase(
    label: str,
    transport: RabbitTransport,
    completed: dict[str, float],
    *,
    shares: int,
    interval: float,
    run_pid: int,
    limit: float,
) -> Phase:
    requests = fresh_requests(shares)
    published: dict[str, float] = {}
    cpu_before = _cpu_seconds(run_pid)
    started = time.perf_counter()
    for request in requests:
        published[request.share_id] = time.perf_counter()
        await transport.publish(request.message())
        await asyncio.sleep(interval)
    while not all(request.share_id in completed for request in requests):
        if time.perf_counter() - started > limit:
            done = sum(1 for request in requests if request.share_id in completed)
            raise BenchError(f"{label}: only {done} of {shares} completed after {limit:.0f}s")
        await asyncio.sleep(0.01)
    return Phase(
        label=label,
        latencies=[completed[r.share_id] - published[r.share_id] for r in requests],
        seconds=time.perf_counter() - started,
        run_cpu_seconds=_cpu_seconds(run_pid) - cpu_before,
    )


def _environment(
    amqp_url: str, database_url: str, smtp_url: str, state_dir: str, port: int
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BLUME_")}
    env.update(
        BLUME_AMQP_URL=amqp_url,
        BLUME_DATABASE_URL=database_url,
        BLUME_SMTP_URL=smtp_url,
        BLUME_TOKEN_SEALING_KEY=Fernet.generate_key().decode(),
        BLUME_GATEWAY_SECRET_KEY=secrets.token_urlsafe(48),
        BLUME_LOG_LEVEL="WARNING",
        BLUME_LOG_FORMAT="json",
        BLUME_STATE_DIR=state_dir,
        BLUME_HTTP_PORT=str(port),
        BLUME_OPS_PORT="0",
        # The flood comes from one address here; an attacker has many, so the per-address
        # limit must not be what stops it.
        BLUME_RATE_LIMIT_PER_IP="1000000/minute",
        BLUME_RATE_LIMIT_PER_TOKEN="1000000/minute",
    )
    return env


def _wait_for_http(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"blume-share run exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError("the gateway did not start")


async def measure(args: argparse.Namespace, amqp_url: str, port: int, run_pid: int) -> list[Phase]:
    completed: dict[str, float] = {}
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for _ in range(600):  # the exchange exists once the workers declared their topology
            try:
                exchange = await channel.get_exchange("blume.share", ensure=True)
                await channel.declare_queue("blume.share.notifier", passive=True)
                break
            except aio_pika.exceptions.ChannelClosed:
                channel = await connection.channel()
                await asyncio.sleep(0.1)
        else:
            raise BenchError("the workers did not declare their topology")
        queue = await channel.declare_queue("", exclusive=True)
        await queue.bind(exchange, routing_key="share.completed")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            arrived = time.perf_counter()
            async with message.process():
                data = json.loads(message.body).get("data", {})
                completed.setdefault(str(data.get("share_id")), arrived)

        await queue.consume(on_message)
        transport = RabbitTransport(amqp_url)
        await transport.connect()
        try:
            options = {
                "shares": args.shares,
                "interval": args.interval,
                "run_pid": run_pid,
                "limit": args.limit,
            }

            async def shares(label: str) -> Phase:
                return await _phase(label, transport, completed, **options)

            await _phase("warm-up", transport, completed, **{**options, "shares": 5})
            phases = [await shares("quiet")]
            for label, crafted in (("plain", False), ("crafted", True)):
                phases.append(await _flooded_phase(label, crafted, port, args.flooders, shares))
        finally:
            await transport.stop()
    return phases


async def _flooded_phase(
    label: str, crafted: bool, port: int, count: int, shares: Callable[[str], Awaitable[Phase]]
) -> Phase:
    """A phase of ``shares`` while ``count`` processes send big Cookie headers to the
    gateway at ``port`` (``crafted``: the CVE-2024-7592 shape)."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    sent = context.Value("i", 0)
    slowest = context.Value("i", 0)
    statuses = context.Queue()
    flooders = [
        context.Process(target=flood, args=(port, crafted, stop, sent, statuses, slowest))
        for _ in range(count)
    ]
    for process in flooders:
        process.start()
    try:
        while True:  # every flooder is under way before the first share
            if sent.value >= count:
                break
            await asyncio.sleep(0.05)
        with sent.get_lock():
            sent.value = 0
        with slowest.get_lock():
            slowest.value = 0
        phase = await shares(label)
        phase.flood_requests = sent.value
    finally:
        stop.set()
        for process in flooders:
            process.join(timeout=60)
    counts: collections.Counter[int] = collections.Counter()
    while not statuses.empty():
        counts[statuses.get()] += 1
    phase.flood_statuses = dict(counts)
    phase.flood_slowest_ms = slowest.value
    return phase


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def report(phases: Sequence[Phase], args: argparse.Namespace) -> str:
    lines = [
        f"header flood: {args.shares} shares per phase, one every {args.interval:g} s, "
        f"{args.flooders} flood processes; one `blume-share run` (workers + gateway), "
        f"Python {sys.version.split()[0]}",
        f"flood Cookie header: {COOKIE_BUDGET} bytes (cap 8192): plain letters, or crafted "
        "(a double-quoted run of backslashes, the CVE-2024-7592 shape)",
        "",
        f"{'phase':<8}{'median':>10}{'p90':>10}{'p99':>10}{'max':>10}"
        f"{'run CPU':>10}{'flood req/s':>14}",
    ]
    for phase in phases:
        ordered = sorted(phase.latencies)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        p99 = ordered[int(0.99 * (len(ordered) - 1))]
        rate = phase.flood_requests / phase.seconds if phase.flood_requests else 0.0
        lines.append(
            f"{phase.label:<8}{_ms(statistics.median(ordered)):>10}{_ms(p90):>10}"
            f"{_ms(p99):>10}{_ms(ordered[-1]):>10}"
            f"{phase.run_cpu_seconds / phase.seconds * 100:>9.0f}%{rate:>14.0f}"
        )
    lines.append("")
    for flooded in phases[1:]:
        lines.append(
            f"{flooded.label} flood: {flooded.flood_requests} requests in "
            f"{flooded.seconds:.1f} s, statuses {flooded.flood_statuses}, "
            f"slowest answer {flooded.flood_slowest_ms} ms"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--shares", type=int, default=50, help="shares per phase")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between shares")
    parser.add_argument("--flooders", type=int, default=4, help="flood processes")
    parser.add_argument("--limit", type=float, default=300, help="seconds a phase may take")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    isolation = Isolation(
        os.environ.get("BLUME_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
        os.environ.get("BLUME_TEST_AMQP_URL", DEFAULT_AMQP),
    )
    sink = SmtpSink()
    controller, smtp_url = start_smtp(sink)
    process: subprocess.Popen[bytes] | None = None
    try:
        database_url = isolation.create_database()
        amqp_url = isolation.create_vhost("flood")
        port = free_port()
        with tempfile.TemporaryDirectory() as state_dir:
            env = _environment(amqp_url, database_url, smtp_url, state_dir, port)
            command = [sys.executable, "-m", "blume_share"]
            subprocess.run([*command, "migrate"], env=env, check=True, capture_output=True)
            process = subprocess.Popen(
                [*command, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            _wait_for_http(port, process, time.monotonic() + 120)
            phases = asyncio.run(measure(args, amqp_url, port, process.pid))
            print(report(phases, args))
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
            process = None
    except BenchError as error:
        print(f"header flood: {error}", file=sys.stderr)
        return 1
    finally:
        if process is not None:
            process.kill()
            process.wait()
        controller.stop()
        isolation.remove_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
