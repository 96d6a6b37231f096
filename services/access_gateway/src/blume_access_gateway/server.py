"""Serving the gateway over HTTP.

``blume-share run`` starts it beside the workers on a thread of its own
(``ThreadedHttpServer``: its own event loop and database engine; publishing and the queue
probe go to the workers' loop), so requests cannot starve message handling;
``blume-share run access_gateway`` starts it alone (``HttpServer`` on the runtime's loop).
Either way the gateway's own worker runs in the same process, feeding the projections the
pages read, and its consumer's health is what ``Freshness`` probes. The Runtime owns
SIGTERM: it stops this server first (in-flight requests finish), then the workers.

The server is uvicorn with the httptools parser (C, where h11 is pure Python and cost about
a tenth of the gateway's CPU per proxied image), bounded as h11 was (``BoundedHeadProtocol``),
and the gateway's own loop is uvloop's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import structlog
import uvicorn
import uvloop
from blume_runtime.db import Database
from blume_runtime.ops import ServerWithoutSignals, bind
from blume_runtime.settings import Settings
from blume_runtime.transport import OutgoingMessage
from blume_runtime.unit_of_work import Relay
from sqlalchemy.exc import SQLAlchemyError
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from blume_access_gateway.app import create_app
from blume_access_gateway.freshness import Freshness, FreshnessCheck, queue_probe
from blume_access_gateway.gateway import NAME, Gateway
from blume_access_gateway.projections import build
from blume_access_gateway.security import MAX_REQUEST_HEAD_BYTES
from blume_access_gateway.settings import GatewaySettings

log = structlog.get_logger(NAME)
T = TypeVar("T")
_GRACEFUL_SHUTDOWN_SECONDS: Final = 10
_COUNTED_DENIALS_EVERY_SECONDS: Final = 15
"""How often the counted denials of finished minutes are recorded (denial_tally)."""


class _HeadTooLargeError(Exception):
    """Raised from a parser callback to stop parsing a head past the bound."""


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head past ``MAX_REQUEST_HEAD_BYTES``
    with a 400 and closing the connection: httptools itself buffers a head (even one header
    value) without any bound, where h11 stopped at its limit.

    Two counts, because a head can come either way:
    - what the parser has handed over (the URL and each complete header), checked as it
      comes: a head that arrives whole in one read (up to the loop's 256 KiB), say one very
      long URL, is refused before it is served;
    - a read that arrives while a head is incomplete, and in which that head did not begin,
      is head bytes alone: those are counted, so a head that never ends (one endless header
      value, which httptools hands over only once complete) is refused after at most the
      limit and one read, and a body or a pipelined request is never counted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._parsed_head_bytes = 0
        self._in_head = False
        self._head_began = False
        self._head_too_large = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = self._head_began = True
        self._head_bytes = self._parsed_head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed(len(name) + len(value))
        super().on_header(name, value)

    def _parsed(self, size: int) -> None:
        self._parsed_head_bytes += size
        if self._parsed_head_bytes > MAX_REQUEST_HEAD_BYTES:
            # httptools stops parsing and uvicorn answers 400 (``send_400_response``).
            self._head_too_large = True
            raise _HeadTooLargeError

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        super().send_400_response("Request head too large" if self._head_too_large else msg)

    def data_received(self, data: bytes) -> None:
        self._head_began = False
        super().data_received(data)
        if not self._in_head or self._head_began:
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_REQUEST_HEAD_BYTES and not self.transport.is_closing():
            self._head_too_large = True
            self.send_400_response("Request head too large")


class HttpServer:
    def __init__(self, gateway: Gateway, host: str, port: int) -> None:
        self.gateway = gateway
        self._host = host
        self._port = port
        config = uvicorn.Config(
            create_app(gateway),
            lifespan="on",
            log_config=None,
            access_log=False,  # its lines would carry link tokens; SecurityMiddleware logs
            server_header=False,
            proxy_headers=False,  # client addresses: BLUME_TRUSTED_PROXIES, in clients.py
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
            # At most MAX_REQUEST_HEAD_BYTES of a request head; HeaderLimitMiddleware caps
            # each header and their sum below it with a 431.
            http=BoundedHeadProtocol,
        )
        self._server = ServerWithoutSignals(config)  # the Runtime owns SIGTERM
        self._task: asyncio.Task[None] | None = None
        self._denials_task: asyncio.Task[None] | None = None
        self.port = port

    @classmethod
    def from_settings(
        cls, settings: Settings, db: Database, relay: Relay, freshness: FreshnessCheck
    ) -> HttpServer:
        config = GatewaySettings()
        gateway = Gateway.build(settings, db, relay, freshness, config=config)
        return cls(gateway, config.http_host, config.http_port)

    async def start(self) -> None:
        sock = bind(self._host, self._port)
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        self._denials_task = asyncio.create_task(self._record_counted_denials())
        log.info("http server started", host=self._host, port=self.port)

    async def _record_counted_denials(self) -> None:
        while True:
            await asyncio.sleep(_COUNTED_DENIALS_EVERY_SECONDS)
            try:
                await self.gateway.record_counted_denials()
                # The same round drops sender launches' sealed study data that is due to go.
                await self.gateway.launches.sweep()
            except (SQLAlchemyError, OSError) as error:  # kept: the next round tries again
                log.warning("periodic gateway work not done yet", error_type=type(error).__name__)

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await self._task
            self._task = None
        if self._denials_task is not None:
            self._denials_task.cancel()
            self._denials_task = None
            # What the current minute counted is recorded before the gateway goes.
            await self.gateway.record_counted_denials(everything=True)
        await self.gateway.close()
        log.info("http server stopped")


def main() -> None:
    """``blume-share-access-gateway``: the gateway alone, as ``blume-share run access_gateway``."""
    from blume_runtime.app import EXIT_UNAVAILABLE, BrokerIdentityError
    from blume_runtime.logging import configure_logging
    from blume_runtime.ops import OpsPortInUseError

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        uvloop.run(_serve(settings))
    except (OpsPortInUseError, BrokerIdentityError) as error:
        log.error("cannot start", error=str(error))
        raise SystemExit(EXIT_UNAVAILABLE) from None


async def _serve(settings: Settings) -> None:
    """The projections' worker and the HTTP server on one runtime, until SIGTERM. Like the
    runtime's ``serve``, but the server is added to the runtime as its component."""
    from blume_runtime.app import Runtime

    db = Database(settings.database)
    freshness = Freshness(GatewaySettings().projection_max_lag_seconds)
    runtime = Runtime(settings, [build(settings, freshness)], db, serve_ops=True)
    freshness.attach(queue_probe(runtime.transport, NAME))
    database, relay = runtime.database_for(NAME), runtime.relay_for(NAME)
    runtime.add(HttpServer.from_settings(settings, database, relay, freshness))
    try:
        await runtime.run_until_signalled()
    finally:
        await db.dispose()


class LoopBridgedRelay:
    """The runtime's relay, called from the gateway's own loop: committed messages are
    handed to the workers' loop, where the transport lives, and awaited there."""

    def __init__(self, relay: Relay, loop: asyncio.AbstractEventLoop) -> None:
        self._relay = relay
        self._loop = loop

    async def publish_committed(self, messages: Sequence[OutgoingMessage]) -> None:
        await on_loop(self._loop, lambda: self._relay.publish_committed(messages))()


def on_loop(
    loop: asyncio.AbstractEventLoop, call: Callable[[], Awaitable[T]]
) -> Callable[[], Awaitable[T]]:
    """``call`` run on ``loop`` (another thread's), awaitable from the caller's own loop."""

    async def there() -> T:
        return await call()

    async def bridged() -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(there(), loop))

    return bridged


class ThreadedHttpServer:
    """The gateway's HTTP server on a thread of its own, for ``blume-share run`` hosting it
    beside the workers: its own event loop and its own database engine, so a flood of
    requests (rendering, cookie parsing, its queries) waits on its own loop, never on the
    workers'. What needs the workers' loop (the transport: publishing committed events,
    probing the gateway's queue for ``Freshness``) is called there (``on_loop``).
    """

    def __init__(self, settings: Settings, relay: Relay, freshness: FreshnessCheck) -> None:
        self._settings = settings
        self._relay = relay
        self._freshness = freshness
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self.port: int | None = None

    async def start(self) -> None:
        workers_loop = asyncio.get_running_loop()
        started: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=lambda: uvloop.run(self._serve(workers_loop, started)),
            name="access-gateway-http",
            daemon=True,
        )
        self._thread.start()
        self.port = await asyncio.wrap_future(started)  # raises what stopped it starting

    async def _serve(
        self, workers_loop: asyncio.AbstractEventLoop, started: concurrent.futures.Future[int]
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        # The gateway's own schema and URL, as the runtime would give it (``database_for``).
        db = Database(self._settings.service_database(NAME), schema=NAME, stages_audit=None)
        try:
            relay = LoopBridgedRelay(self._relay, workers_loop)
            server = HttpServer.from_settings(self._settings, db, relay, self._freshness)
            try:
                await server.start()
            except BaseException as error:  # noqa: BLE001 - raised again by start()
                started.set_exception(error)
                await server.gateway.close()
                return
            started.set_result(server.port)
            await self._stopping.wait()
            await server.stop()
        finally:
            await db.dispose()

    async def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
