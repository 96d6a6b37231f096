"""Serving the gateway over HTTP on the runtime's event loop.

``blume-share run`` starts it beside the workers (sharing their database engine, transport
and outbox relay); ``blume-share run access_gateway`` starts it alone. Either way the
gateway's own worker runs in the same process, feeding the projections the pages read, and
its consumer's health is what ``Freshness`` probes. The Runtime owns
SIGTERM: it stops this server first (in-flight requests finish), then the workers.
"""

from __future__ import annotations

import asyncio
from typing import Final

import structlog
import uvicorn
from blume_runtime.db import Database
from blume_runtime.ops import ServerWithoutSignals, bind
from blume_runtime.settings import Settings
from blume_runtime.unit_of_work import Relay
from sqlalchemy.exc import SQLAlchemyError

from blume_access_gateway.app import create_app
from blume_access_gateway.freshness import Freshness, FreshnessCheck, queue_probe
from blume_access_gateway.gateway import NAME, Gateway
from blume_access_gateway.projections import build
from blume_access_gateway.security import H11_MAX_REQUEST_HEAD_BYTES
from blume_access_gateway.settings import GatewaySettings

log = structlog.get_logger(NAME)
_GRACEFUL_SHUTDOWN_SECONDS: Final = 10
_COUNTED_DENIALS_EVERY_SECONDS: Final = 15
"""How often the counted denials of finished minutes are recorded (denial_tally)."""


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
            # h11 buffers at most this much of a request head; HeaderLimitMiddleware caps
            # each header and their sum below it with a 431.
            h11_max_incomplete_event_size=H11_MAX_REQUEST_HEAD_BYTES,
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
                await self.gateway.access.record_counted_denials()
            except (SQLAlchemyError, OSError) as error:  # kept: the next round tries again
                log.warning("counted denials not recorded yet", error_type=type(error).__name__)

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await self._task
            self._task = None
        if self._denials_task is not None:
            self._denials_task.cancel()
            self._denials_task = None
            # What the current minute counted is recorded before the gateway goes.
            await self.gateway.access.record_counted_denials(everything=True)
        await self.gateway.close()
        log.info("http server stopped")


def main() -> None:
    """``blume-share-access-gateway``: the gateway alone, as ``blume-share run access_gateway``."""
    from blume_runtime.app import EXIT_UNAVAILABLE, BrokerIdentityError, Runtime
    from blume_runtime.logging import configure_logging
    from blume_runtime.ops import OpsPortInUseError

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)

    async def run() -> None:
        db = Database(settings.database)
        freshness = Freshness(GatewaySettings().projection_max_lag_seconds)
        runtime = Runtime(settings, [build(settings, freshness)], db, serve_ops=True)
        freshness.attach(queue_probe(runtime.transport, NAME))
        runtime.add(
            HttpServer.from_settings(
                settings, runtime.database_for(NAME), runtime.relay_for(NAME), freshness
            )
        )
        try:
            await runtime.run_until_signalled()
        finally:
            await db.dispose()

    try:
        asyncio.run(run())
    except (OpsPortInUseError, BrokerIdentityError) as error:
        log.error("cannot start", error=str(error))
        raise SystemExit(EXIT_UNAVAILABLE) from None
