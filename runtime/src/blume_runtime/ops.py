"""The ops port of a long-running process: ``/healthz``, ``/readyz`` and ``/metrics``.

Served by uvicorn on the runtime's event loop (Starlette routes), started and stopped with
the transport. ``/readyz`` is 503, naming the failing check, while any queue of this process
has no consumer of this process, the database does not answer within a short timeout, or
the oldest unpublished outbox row is older than ``BLUME_OUTBOX_MAX_AGE_SECONDS``.
``/healthz`` is 200 while the process lives, and 503 once a queue has had no consumer for
longer than ``BLUME_CONSUMER_GRACE_SECONDS``: the orchestrator then restarts a process that
could not heal itself. ``/metrics`` is prometheus-client's exposition of the default registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import prometheus_client
import structlog
import uvicorn
from sqlalchemy import func, select
from sqlmodel import col
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from blume_runtime import metrics
from blume_runtime.db import Database, OutboxMessage
from blume_runtime.lifecycle import cancel_and_wait
from blume_runtime.settings import Settings
from blume_runtime.topology import QUEUE_PREFIX
from blume_runtime.transport import Transport

log = structlog.get_logger("ops")

DATABASE_TIMEOUT_SECONDS: Final = 2.0
"""A database that does not answer this fast makes the process not ready."""


class OpsPortInUseError(RuntimeError):
    """``BLUME_OPS_PORT`` is taken: the process refuses to start (exit code 3)."""


class ServerWithoutSignals(uvicorn.Server):
    """uvicorn on a loop whose owner (the runtime) handles SIGTERM and SIGINT itself.

    Its housekeeping wakes once a second (the resolution of the ``Date`` header it keeps),
    not ten times; setting ``should_exit`` wakes it at once, so stopping is as quick.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        self._exit_requested = asyncio.Event()
        super().__init__(config)

    @property
    def should_exit(self) -> bool:
        return self._exit_requested.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value:
            self._exit_requested.set()
        else:
            self._exit_requested.clear()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        ticks = 0
        while not await self.on_tick(ticks):
            ticks += 10  # uvicorn's tick is 0.1 s: a multiple of 10 refreshes the Date header
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit_requested.wait(), timeout=1.0)


def bind(host: str, port: int) -> socket.socket:
    """Bind here, so a busy port is an OSError for the caller (uvicorn would exit the process)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on each accepted connection: it skips
    # a socket whose proto is 0, and Nagle then holds a response's last segment for the
    # client's delayed ACK (~40 ms a proxied image frame).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class _Exposition:
    """prometheus-client's ASGI app as a route (Starlette calls a plain function as a
    request handler, and a mount would redirect ``/metrics`` to ``/metrics/``)."""

    def __init__(self) -> None:
        self._app = prometheus_client.make_asgi_app()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


class OpsServer:
    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        db: Database,
        names: Sequence[str],
        *,
        databases: Mapping[str, Database] | None = None,
    ) -> None:
        """``databases``: each name's own (its schema's outbox); unnamed ones use ``db``."""
        self._settings = settings
        self._transport = transport
        self._names = list(names)
        given = databases or {}
        self._databases = {name: given.get(name, db) for name in self._names}
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        app = Starlette(
            routes=[
                Route("/healthz", self._healthz),
                Route("/readyz", self._readyz),
                Route("/metrics", _Exposition()),
            ]
        )
        self._server = ServerWithoutSignals(
            uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
        )
        self.port = settings.ops_port

    def bind(self) -> None:
        """Take the port now, so that a busy one stops the process before it does anything."""
        try:
            self._socket = bind(self._settings.ops_host, self._settings.ops_port)
        except OSError as error:
            raise OpsPortInUseError(
                f"the ops port {self._settings.ops_host}:{self._settings.ops_port} is not "
                f"available ({error.strerror}): set BLUME_OPS_PORT to a free port, or 0 for none"
            ) from None
        self.port = self._socket.getsockname()[1]

    async def start(self) -> None:
        if self._socket is None:
            self.bind()
        assert self._socket is not None
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the ops server stopped while starting")
            await asyncio.sleep(0.01)
        self._refresher = asyncio.create_task(self._refresh_forever())
        log.info("ops port serving", port=self.port, paths=["/healthz", "/readyz", "/metrics"])

    async def stop(self) -> None:
        await cancel_and_wait(self._refresher)
        if self._task is not None:
            self._server.should_exit = True
            await self._task
            self._task = None

    def consumer_check(self) -> str | None:
        """None when every queue of this process has a consumer of this process."""
        states = self._transport.consumer_states()
        for queue, attached in states.items():
            metrics.CONSUMERS_ATTACHED.labels(queue.removeprefix(QUEUE_PREFIX), queue).set(
                int(attached)
            )
        lost = sorted(queue for queue, attached in states.items() if not attached)
        return f"no consumer of this process on {', '.join(lost)}" if lost else None

    async def outbox_check(self) -> tuple[str | None, str | None]:
        """(database problem, outbox problem); also sets the outbox gauges."""
        try:
            outboxes = await asyncio.wait_for(self._outboxes(), DATABASE_TIMEOUT_SECONDS)
        except Exception as error:  # noqa: BLE001 - any failure means not ready
            return f"database unreachable ({type(error).__name__})", None
        now = datetime.now(UTC)
        oldest_age = 0.0
        for name, (backlog, oldest) in outboxes.items():
            age = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
            metrics.OUTBOX_BACKLOG.labels(name).set(backlog)
            metrics.OUTBOX_OLDEST_AGE.labels(name).set(age)
            oldest_age = max(oldest_age, age)
        limit = self._settings.outbox_max_age_seconds
        if oldest_age > limit:
            return None, f"oldest unpublished event is {oldest_age:.0f} s old (limit {limit:.0f} s)"
        return None, None

    async def _outboxes(self) -> dict[str, tuple[int, datetime | None]]:
        """Each name's outbox (backlog, oldest row); a database shared by names is asked once."""
        query = select(func.count(), func.min(col(OutboxMessage.created_at)))
        by_database: dict[int, tuple[int, datetime | None]] = {}
        for database in self._databases.values():
            if id(database) not in by_database:
                async with database.engine.connect() as connection:
                    backlog, oldest = (await connection.execute(query)).one()
                by_database[id(database)] = (int(backlog), oldest)
        return {name: by_database[id(database)] for name, database in self._databases.items()}

    async def _readyz(self, _request: Request) -> JSONResponse:
        database, outbox = await self.outbox_check()
        checks = {"consumers": self.consumer_check(), "database": database, "outbox": outbox}
        return _verdict("ready", checks)

    async def _healthz(self, _request: Request) -> JSONResponse:
        lost_since = self._transport.consumers_lost_since()
        grace = self._settings.consumer_grace_seconds
        problem = None
        if lost_since is not None and (lost_for := time.monotonic() - lost_since) > grace:
            problem = f"{self.consumer_check()} for {lost_for:.0f} s (grace {grace:.0f} s)"
        return _verdict("alive", {"consumers": problem})

    async def _refresh_forever(self) -> None:
        """Keep the gauges current between scrapes that never ask ``/readyz``."""
        while True:
            self.consumer_check()
            await self.outbox_check()
            await asyncio.sleep(self._settings.consumer_watchdog_seconds)


def _verdict(good: str, checks: dict[str, str | None]) -> JSONResponse:
    failing = {name: problem for name, problem in checks.items() if problem is not None}
    body: dict[str, Any] = {
        "status": good if not failing else f"not {good}",
        "checks": {name: problem or "ok" for name, problem in checks.items()},
    }
    if failing:
        body["failing"] = sorted(failing)
    return JSONResponse(body, status_code=503 if failing else 200)
