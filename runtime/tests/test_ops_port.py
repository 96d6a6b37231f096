"""The ops port's checks, in process: database, outbox age, consumers, metrics, a busy port."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from blume_runtime.app import BrokerIdentityError, Runtime
from blume_runtime.broker_users import service_names
from blume_runtime.db import Database, OutboxMessage, utcnow
from blume_runtime.ops import OpsPortInUseError, OpsServer, bind
from blume_runtime.service import Service
from blume_runtime.settings import Settings
from blume_runtime.testing import RecordingTransport

from runtime.tests.db_support import NO_AUDIT_STORE, runtime_database


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[Database]:
    db = await runtime_database(tmp_path / "ops.db")
    yield db
    await db.dispose()


class Consumers(RecordingTransport):
    """A transport whose consumers are attached or not, as the test says."""

    def __init__(self, states: dict[str, bool], lost_since: float | None = None) -> None:
        super().__init__()
        self.states = states
        self.lost_since = lost_since

    def consumer_states(self) -> dict[str, bool]:
        return dict(self.states)

    def consumers_lost_since(self) -> float | None:
        return self.lost_since


@pytest.fixture
async def serving(
    sqlite: Database,
) -> AsyncIterator[tuple[OpsServer, Consumers, httpx.AsyncClient]]:
    transport = Consumers({"blume.share.notifier": True})
    settings = Settings(ops_port=0, consumer_grace_seconds=30, outbox_max_age_seconds=60)
    server = OpsServer(settings, transport, sqlite, ["notifier"])
    await server.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        yield server, transport, client
    await server.stop()


async def test_ready_and_alive_with_metrics(
    serving: tuple[OpsServer, Consumers, httpx.AsyncClient],
) -> None:
    """With its consumer, its database and an empty outbox, the process is ready; /metrics
    is Prometheus' text exposition with the consumer and outbox gauges."""
    _server, _transport, client = serving
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
    assert (await client.get("/healthz")).status_code == 200
    scraped = await client.get("/metrics")
    assert scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    assert 'blume_consumers_attached{queue="blume.share.notifier",service="notifier"} 1.0' in text
    assert 'blume_outbox_backlog{service="notifier"} 0.0' in text


async def test_not_ready_without_a_consumer_and_unhealthy_after_the_grace(
    serving: tuple[OpsServer, Consumers, httpx.AsyncClient],
) -> None:
    """A lost consumer makes /readyz 503 naming the check; /healthz stays 200 until the
    consumer has been missing longer than the grace period."""
    _server, transport, client = serving
    transport.states["blume.share.notifier"] = False
    transport.lost_since = time.monotonic() - 5
    answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["failing"] == ["consumers"]
    assert "blume.share.notifier" in answer.json()["checks"]["consumers"]
    assert (await client.get("/healthz")).status_code == 200
    transport.lost_since = time.monotonic() - 31
    unhealthy = await client.get("/healthz")
    assert unhealthy.status_code == 503
    assert "grace 30 s" in unhealthy.json()["checks"]["consumers"]
    assert (
        'blume_consumers_attached{queue="blume.share.notifier",service="notifier"} 0.0'
        in (await client.get("/metrics")).text
    )


async def test_not_ready_while_the_outbox_holds_an_old_event(
    serving: tuple[OpsServer, Consumers, httpx.AsyncClient], sqlite: Database
) -> None:
    """An unpublished event older than BLUME_OUTBOX_MAX_AGE_SECONDS means the broker is not
    taking our events: not ready, and the backlog gauges say how bad."""
    _server, _transport, client = serving
    async with sqlite.transaction() as session:
        session.add(
            OutboxMessage(
                event_id="stuck",
                routing_key="share.completed",
                body=b"{}",
                created_at=utcnow() - timedelta(seconds=90),
            )
        )
    answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["failing"] == ["outbox"]
    assert "limit 60 s" in answer.json()["checks"]["outbox"]
    metrics = (await client.get("/metrics")).text
    assert 'blume_outbox_backlog{service="notifier"} 1.0' in metrics


async def test_not_ready_when_the_database_does_not_answer() -> None:
    """A database that cannot be reached within the timeout fails the database check."""
    db = Database("postgresql://nobody@127.0.0.1:1/none")
    server = OpsServer(Settings(ops_port=0), Consumers({}), db, ["access_gateway"])
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            answer = await client.get("/readyz")
    finally:
        await server.stop()
        await db.dispose()
    assert answer.status_code == 503
    assert answer.json()["failing"] == ["database"]


async def test_a_busy_ops_port_stops_the_runtime_before_it_starts(
    sqlite: Database, tmp_path: Path
) -> None:
    """The port is taken first: a busy one is a clear error naming BLUME_OPS_PORT."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runtime = Runtime(
            Settings(state_dir=tmp_path, ops_port=port, audit_copies=NO_AUDIT_STORE),
            [Service("probe")],
            sqlite,
            serve_ops=True,
        )
        with pytest.raises(OpsPortInUseError, match="BLUME_OPS_PORT"):
            await runtime.start()


async def test_a_process_whose_user_is_not_its_services_refuses_to_start(
    sqlite: Database, tmp_path: Path
) -> None:
    """With BLUME_BROKER_USERS, a process connecting as one service's user cannot run
    another service: everything it published would be refused as untrusted."""
    mapping = ",".join(f"{name}={name}" for name in sorted(service_names()))
    settings = Settings(
        state_dir=tmp_path, amqp_url="amqp://notifier:secret@127.0.0.1:1/", broker_users=mapping
    )
    runtime = Runtime(settings, [Service("link_issuer")], sqlite)
    with pytest.raises(BrokerIdentityError, match="link_issuer"):
        await runtime.start()


async def test_connections_accepted_on_a_bound_port_send_without_nagles_delay() -> None:
    """A connection accepted on ``bind``'s socket has TCP_NODELAY set (asyncio sets it only
    on a socket created as TCP), so a response's last small segment is not held back for
    the client's delayed ACK."""
    sock = bind("127.0.0.1", 0)
    accepted: asyncio.Queue[int] = asyncio.Queue()

    async def on_connection(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn: socket.socket = writer.get_extra_info("socket")
        await accepted.put(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connection, sock=sock)
    try:
        _reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        nodelay = await asyncio.wait_for(accepted.get(), 5)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert nodelay == 1
