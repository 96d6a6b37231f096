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

Run: ``uv run python -m bench.throughput [--shares N | --quick] [--processes]``. By default
every worker runs in this one process (``blume-share run``); ``--processes`` starts one
``blume-share run <worker>`` process per worker, the deployed topology.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib.metadata
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesHeaderParser
from importlib.resources import files
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aio_pika
import psycopg
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from aiosmtpd.controller import Controller
from blume_notifier.render import link_message_id
from blume_runtime.app import Runtime
from blume_runtime.db import Database
from blume_runtime.logging import configure_logging
from blume_runtime.rabbit import RabbitTransport
from blume_runtime.settings import Settings
from blume_share.requests import PreparedRequest, parse_requests
from blume_share.schema import upgrade
from blume_share.services import SERVICES
from cryptography.fernet import Fernet
from psycopg import sql
from pydantic import SecretStr

DEFAULT_POSTGRES: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_AMQP: Final = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_SHARES: Final = 300
QUICK_SHARES: Final = 50
HOPS: Final = 3
"""Consumer hops on the product's critical path: dispatcher, link_issuer, notifier."""
RAW_EXCHANGE: Final = "bench.raw"
POLL_SECONDS: Final = 0.02


class BenchError(RuntimeError):
    """The benchmark could not complete (timeout, lost messages, set-up failure)."""


# ---------------------------------------------------------------------------- isolation


def _rabbitmqctl(*args: str) -> str:
    executable = shutil.which("rabbitmqctl")
    if executable is None:
        raise BenchError("rabbitmqctl is not on PATH: it is needed to create a RabbitMQ vhost")
    done = subprocess.run(
        [executable, *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Isolation:
    """Databases and vhosts this run created, so that exactly those are removed."""

    postgres_admin_url: str
    amqp_admin_url: str
    databases: list[str] = field(default_factory=list)
    vhosts: list[str] = field(default_factory=list)

    def create_database(self) -> str:
        name = f"blume_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.postgres_admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.databases.append(name)
        parts = urlsplit(self.postgres_admin_url)
        return urlunsplit(parts._replace(path=f"/{name}"))

    def create_vhost(self, purpose: str) -> str:
        vhost = f"blume-bench-{purpose}-{uuid.uuid4().hex[:12]}"
        user = urlsplit(self.amqp_admin_url).username or "guest"
        _rabbitmqctl("add_vhost", vhost)
        self.vhosts.append(vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        parts = urlsplit(self.amqp_admin_url)
        return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))

    def queue_depths(self, url: str) -> str:
        """``name ready unacked`` per queue of the vhost in ``url``, for a timeout's message."""
        vhost = unquote(urlsplit(url).path.lstrip("/"))
        columns = ("name", "messages_ready", "messages_unacknowledged")
        try:
            return _rabbitmqctl(
                "list_queues", "-q", "--no-table-headers", "-p", vhost, *columns
            ).strip()
        except BenchError as error:
            return str(error)

    def remove_all(self) -> None:
        problems: list[str] = []
        for vhost in self.vhosts:
            try:
                _rabbitmqctl("delete_vhost", vhost)
            except (BenchError, subprocess.TimeoutExpired) as error:
                problems.append(f"vhost {vhost}: {error}")
        self.vhosts.clear()
        if self.databases:
            try:
                with psycopg.connect(self.postgres_admin_url, autocommit=True) as admin:
                    for name in self.databases:
                        admin.execute(
                            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                                sql.Identifier(name)
                            )
                        )
            except psycopg.Error as error:
                problems.append(f"databases {self.databases}: {error}")
            self.databases.clear()
        for problem in problems:
            print(f"cleanup failed, remove by hand: {problem}", file=sys.stderr)


# ------------------------------------------------------------------------------- SMTP


class SmtpSink:
    """aiosmtpd handler: counts accepted messages, keeps the first arrival per Message-ID.

    It runs on the controller's thread, so its state is guarded by a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parser = BytesHeaderParser(policy=policy.default)
        self._first_arrival: dict[str, float] = {}
        self._copies: collections.Counter[str] = collections.Counter()
        self._peers: set[tuple[str, int]] = set()
        self._accepted = 0

    async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        arrived = time.perf_counter()
        peer = session.peer if isinstance(session.peer, tuple) else ("?", 0)
        content = envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        message_id = str(self._parser.parsebytes(raw).get("Message-ID", "")).strip()
        with self._lock:
            self._accepted += 1
            self._peers.add((str(peer[0]), int(peer[1])))
            self._copies[message_id] += 1
            self._first_arrival.setdefault(message_id, arrived)
        return "250 2.0.0 OK"

    def arrivals(self) -> dict[str, float]:
        with self._lock:
            return dict(self._first_arrival)

    def tally(self) -> tuple[int, collections.Counter[str]]:
        """Messages accepted in all, and copies per Message-ID."""
        with self._lock:
            return self._accepted, collections.Counter(self._copies)

    @property
    def connections(self) -> int:
        """Distinct client connections (host, port) that delivered a message."""
        with self._lock:
            return len(self._peers)


def start_smtp(sink: SmtpSink) -> tuple[Controller, str]:
    with socket.socket() as probe:  # aiosmtpd cannot start on port 0: pick a free port
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(
        sink, hostname="127.0.0.1", port=port, server_hostname="bench-smtp.localhost"
    )
    controller.start()
    return controller, f"smtp://127.0.0.1:{port}"


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Figures:
    """One side's measured batch."""

    count: int
    elapsed: float
    latencies: list[float]
    cpu_seconds: float
    publish_seconds: float
    """How long publishing the batch took (sequential, each publish confirmed)."""

    @property
    def throughput(self) -> float:
        return self.count / self.elapsed if self.elapsed > 0 else float("inf")

    def percentile(self, p: int) -> float:
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1]

    @property
    def cpu_share(self) -> float:
        """Process CPU time over wall time during the batch (1.0 = one core busy)."""
        return self.cpu_seconds / self.elapsed if self.elapsed > 0 else 0.0


Send = Callable[[], Awaitable[None]]


async def _progress(label: str, total: int, seen: Callable[[], int], every: float) -> None:
    started = time.perf_counter()
    while True:
        await asyncio.sleep(every)
        elapsed = time.perf_counter() - started
        print(f"  [{label}] {seen()}/{total} done after {elapsed:.1f}s", file=sys.stderr)


async def drive(
    label: str,
    items: Sequence[tuple[str, Send]],
    arrivals: Callable[[], Mapping[str, float]],
    *,
    batch_limit: float,
    progress_every: float,
    diagnose: Callable[[], str],
) -> Figures:
    """Publish ``items`` in order (timing each), then wait until every key has arrived."""
    keys = [key for key, _send in items]
    published: dict[str, float] = {}

    def done() -> int:
        seen = arrivals()
        return sum(1 for key in keys if key in seen)

    progress = asyncio.create_task(_progress(label, len(keys), done, progress_every))
    cpu_started = time.process_time()
    try:
        for key, send in items:
            published[key] = time.perf_counter()
            await send()
        first = min(published.values())
        publish_seconds = time.perf_counter() - first
        while done() < len(keys):
            if time.perf_counter() - first > batch_limit:
                raise BenchError(
                    f"{label}: only {done()} of {len(keys)} done after {batch_limit:.0f}s; "
                    f"queues (name, ready, unacked):\n{diagnose()}"
                )
            await asyncio.sleep(POLL_SECONDS)
    finally:
        progress.cancel()
    cpu_seconds = time.process_time() - cpu_started
    seen = arrivals()
    last = max(seen[key] for key in keys)
    return Figures(
        count=len(keys),
        elapsed=last - first,
        latencies=[seen[key] - published[key] for key in keys],
        cpu_seconds=cpu_seconds,
        publish_seconds=publish_seconds,
    )


def fresh_requests(count: int) -> list[PreparedRequest]:
    """Requests built like ``blume-share send`` builds the bundled example: a fresh id each."""
    example = files("blume_share").joinpath("examples/study-send-request.json").read_text()
    requests: list[PreparedRequest] = []
    for _ in range(count):
        requests.extend(parse_requests(example))
    return requests


# ----------------------------------------------------------------------------- product


@dataclass(frozen=True)
class ProductRun:
    figures: Figures
    expected: int
    accepted: int
    distinct: int
    duplicated: dict[str, int]
    unexpected: list[str]
    prefetch: int
    smtp_connections: int
    services: list[str]
    separate_processes: bool = False

    @property
    def exact(self) -> bool:
        return (
            self.accepted == self.expected
            and self.distinct == self.expected
            and not self.duplicated
            and not self.unexpected
        )


def product_settings(amqp_url: str, database_url: str, smtp_url: str) -> Settings:
    return Settings(
        amqp_url=SecretStr(amqp_url),
        database_url=SecretStr(database_url),
        smtp_url=smtp_url,
        token_sealing_key=SecretStr(Fernet.generate_key().decode()),
        log_level="WARNING",
        log_format="json",
    )


def _worker_environment(settings: Settings, state_dir: str) -> dict[str, str]:
    assert settings.amqp_url is not None
    assert settings.database_url is not None
    assert settings.token_sealing_key is not None
    env = {key: value for key, value in os.environ.items() if not key.startswith("BLUME_")}
    env.update(
        BLUME_AMQP_URL=settings.amqp_url.get_secret_value(),
        BLUME_DATABASE_URL=settings.database_url.get_secret_value(),
        BLUME_SMTP_URL=settings.smtp_url or "",
        BLUME_TOKEN_SEALING_KEY=settings.token_sealing_key.get_secret_value(),
        BLUME_LOG_LEVEL="WARNING",
        BLUME_LOG_FORMAT="json",
        BLUME_STATE_DIR=state_dir,
        BLUME_OPS_PORT="0",  # one process per worker: they cannot all have the default port
    )
    return env


def _spawn_worker_processes(settings: Settings, state_dir: str) -> list[subprocess.Popen[bytes]]:
    """One ``blume-share run <worker>`` process per worker, as a deployment runs them."""
    env = _worker_environment(settings, state_dir)
    return [
        subprocess.Popen(
            [sys.executable, "-m", "blume_share", "run", name],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in SERVICES
    ]


async def _wait_for_workers(settings: Settings) -> None:
    assert settings.amqp_url is not None
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        for name in SERVICES:  # ready once each worker has declared its queue
            for _ in range(300):
                channel = await connection.channel()
                try:
                    await channel.declare_queue(f"blume.share.{name}", passive=True)
                    break
                except aio_pika.exceptions.ChannelClosed:
                    await asyncio.sleep(0.1)
            else:
                raise BenchError(f"worker {name} did not start")


def _stop_worker_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


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
) -> ProductRun:
    assert settings.amqp_url is not None
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
        else:
            processes = _spawn_worker_processes(settings, state_dir)
            await _wait_for_workers(settings)
        await publisher.connect()
        if warmup:
            await drive(
                "product warm-up",
                batch(fresh_requests(warmup)),
                sink.arrivals,
                batch_limit=batch_limit,
                progress_every=progress_every,
                diagnose=diagnose,
            )
        figures = await drive(
            "product",
            batch(fresh_requests(shares)),
            sink.arrivals,
            batch_limit=batch_limit,
            progress_every=progress_every,
            diagnose=diagnose,
        )
        # A duplicate would arrive after the original: give redeliveries time to show.
        await asyncio.sleep(settle)
    finally:
        await publisher.stop()
        if runtime is not None:
            await runtime.stop()
        _stop_worker_processes(processes)
        shutil.rmtree(state_dir, ignore_errors=True)
        await db.dispose()
    accepted, copies = sink.tally()
    return ProductRun(
        figures=figures,
        expected=warmup + shares,
        accepted=accepted,
        distinct=len(copies),
        duplicated={key: count for key, count in copies.items() if count > 1},
        unexpected=sorted(key for key in copies if key not in by_message_id),
        prefetch=settings.prefetch,
        smtp_connections=sink.connections,
        services=list(SERVICES),
        separate_processes=separate_processes,
    )


# -------------------------------------------------------------------------- raw aio-pika


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
) -> RawRun:
    content_type = "application/cloudevents+json"
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
            sends: list[tuple[str, Send]] = []
            for message_id, body in items:
                message = aio_pika.Message(
                    body,
                    message_id=message_id,
                    content_type=content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )

                async def send(message: aio_pika.Message = message) -> None:
                    await exchange.publish(message, routing_key=_hop_key(1))

                sends.append((message_id, send))
            return sends

        def seen() -> Mapping[str, float]:
            return arrivals

        if warmup_bodies:
            await drive(
                "raw warm-up",
                batch(warmup_bodies),
                seen,
                batch_limit=batch_limit,
                progress_every=progress_every,
                diagnose=diagnose,
            )
        figures = await drive(
            "raw",
            batch(bodies),
            seen,
            batch_limit=batch_limit,
            progress_every=progress_every,
            diagnose=diagnose,
        )
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


# ------------------------------------------------------------------------------ report


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def postgres_version(url: str) -> str:
    try:
        with psycopg.connect(url) as connection:
            row = connection.execute("SHOW server_version").fetchone()
    except psycopg.Error as error:
        return f"unknown ({type(error).__name__})"
    return str(row[0]) if row else "unknown"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def render_report(
    product: ProductRun,
    raw: RawRun,
    *,
    body_size: int,
    warmup: int,
    postgres: str,
) -> str:
    p, r = product.figures, raw.figures
    rabbit = raw.server
    topology = "1 per process" if product.separate_processes else "one process"
    width = 32

    def row(name: str, left: str, right: str) -> str:
        return f"  {name:<{width}}{left:>20}  {right:>22}"

    lines = [
        "Blume Share throughput: product end to end vs raw aio-pika (same broker, same run)",
        "",
        f"  N measured                      {p.count} shares / {r.count} messages "
        f"(after {warmup} untimed warm-up each)",
        f"  message body                    {body_size} bytes (study.send.requested envelope)",
        f"  critical path                   {HOPS} consumer hops, persistent, confirms, "
        "quorum queues",
        f"  prefetch per consumer           {product.prefetch}",
        f"  {'product workers (' + topology + ')':<32}{', '.join(product.services)}",
        "",
        row("", "product", "raw aio-pika"),
        row(
            "throughput",
            f"{p.throughput:,.1f} shares/s",
            f"{r.throughput:,.1f} messages/s",
        ),
        row("latency p50", _ms(p.percentile(50)), _ms(r.percentile(50))),
        row("latency p99", _ms(p.percentile(99)), _ms(r.percentile(99))),
        row("latency max", _ms(max(p.latencies)), _ms(max(r.latencies))),
        row("first publish -> last done", f"{p.elapsed:,.2f} s", f"{r.elapsed:,.2f} s"),
        row(
            "publishing alone (confirmed)",
            f"{p.publish_seconds:,.2f} s",
            f"{r.publish_seconds:,.2f} s",
        ),
        row(
            "process CPU / wall",
            "(workers elsewhere)" if product.separate_processes else f"{p.cpu_share:.0%} of a core",
            f"{r.cpu_share:.0%} of a core",
        ),
        "",
        f"  ratio product / raw (throughput)   {p.throughput / r.throughput:.3f}"
        f"  (raw is {r.throughput / p.throughput:,.1f}x faster)",
        f"  ratio product / raw (latency p50)  {p.percentile(50) / r.percentile(50):,.1f}x",
        f"  ratio product / raw (latency p99)  {p.percentile(99) / r.percentile(99):,.1f}x",
        "",
        f"  emails accepted                 {product.accepted} "
        f"(expected {product.expected} incl. warm-up), "
        f"{product.distinct} distinct Message-IDs, "
        f"{len(product.duplicated)} duplicated, {len(product.unexpected)} unexpected"
        + ("" if product.exact else "  <-- NOT EXACTLY ONCE"),
        f"  SMTP client connections         {product.smtp_connections} "
        f"for {product.accepted} emails",
        f"  raw duplicates delivered        {raw.duplicates}",
        "",
        "  environment",
        f"    RabbitMQ                      {_text(rabbit.get('version', '?'))}"
        f" ({_text(rabbit.get('platform', '?'))})",
        f"    PostgreSQL                    {postgres}",
        f"    Python                        {platform.python_version()} "
        f"({platform.python_implementation()}), {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.machine()}",
        f"    aio-pika / aiormq             {_version('aio-pika')} / {_version('aiormq')}",
        "",
        "  throughput = N / (last completion - first publish); latency = completion - publish",
        "  of the same message; product completion = SMTP server accepted the share's email.",
    ]
    return "\n".join(lines)


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
    args = parser.parse_args(argv)
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
