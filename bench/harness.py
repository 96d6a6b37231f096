"""What every benchmark needs around the product: its own PostgreSQL database and RabbitMQ
vhosts, removed at the end (``Isolation``), and a local SMTP server that times each email's
arrival (``SmtpSink``). Used by ``throughput``, ``header_flood`` and ``gateway_latency``.
"""

from __future__ import annotations

import collections
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesHeaderParser
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg
from aiosmtpd.controller import Controller
from psycopg import sql

DEFAULT_POSTGRES: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_AMQP: Final = "amqp://guest:guest@127.0.0.1:5672/"


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


def free_port() -> int:
    """A local TCP port nobody listens on now (for servers that cannot start on port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_smtp(sink: SmtpSink) -> tuple[Controller, str]:
    port = free_port()  # aiosmtpd cannot start on port 0
    controller = Controller(
        sink, hostname="127.0.0.1", port=port, server_hostname="bench-smtp.localhost"
    )
    controller.start()
    return controller, f"smtp://127.0.0.1:{port}"
