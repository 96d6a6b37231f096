"""Running a set of services in one process: production (RabbitMQ) or the embedded default."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

import structlog

from blume_runtime.db import Database
from blume_runtime.outbox import OutboxRelay
from blume_runtime.rabbit import RabbitTransport
from blume_runtime.service import Service
from blume_runtime.settings import Settings
from blume_runtime.transport import InMemoryTransport, OutgoingMessage, Transport
from blume_runtime.worker import Worker

log = structlog.get_logger("runtime")


def make_transport(settings: Settings) -> Transport:
    if settings.amqp_url is None:
        return InMemoryTransport(retry_delay_seconds=min(settings.retry_delay_seconds, 0.5))
    return RabbitTransport(
        settings.amqp_url.get_secret_value(),
        prefetch=settings.prefetch,
        retry_delay_seconds=settings.retry_delay_seconds,
    )


class Runtime:
    """Services sharing one database engine, one transport and one outbox relay."""

    def __init__(self, settings: Settings, services: Sequence[Service], db: Database) -> None:
        self.settings = settings
        self.services = list(services)
        self.db = db
        self.transport = make_transport(settings)
        self.relay = OutboxRelay(db, self.transport)
        for service in self.services:
            worker = Worker(service, db, self.relay, settings)
            self.transport.subscribe(service.queue, worker)
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for service in self.services:
            for begin in service.startup:
                await begin()
        await self.transport.start()
        self._sweeper = asyncio.create_task(
            self.relay.run_forever(self.settings.outbox_poll_seconds)
        )
        log.info(
            "runtime started",
            services=[service.name for service in self.services],
            broker="in-memory" if self.settings.embedded_broker else "rabbitmq",
            database="sqlite" if self.db.is_sqlite else "postgresql",
        )

    async def publish(self, message: OutgoingMessage) -> None:
        await self.transport.publish(message)

    async def wait_until_idle(self, *, settle_seconds: float = 0.3) -> None:
        """Embedded default only: return once no message is queued, in flight or retrying."""
        transport = self.transport
        if not isinstance(transport, InMemoryTransport):
            raise RuntimeError("idle detection needs the embedded broker")
        while True:
            await asyncio.sleep(settle_seconds)
            if transport.idle and await self.relay.sweep(older_than=timedelta(0)) == 0:
                await asyncio.sleep(settle_seconds)
                if transport.idle:
                    return

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.transport.stop()
        try:
            await self.relay.forget_published()
        except Exception as error:  # noqa: BLE001 - rows left behind are only swept again
            log.warning("outbox clean-up deferred", error_type=type(error).__name__)
        for service in self.services:
            for close in service.resources:
                await close()
        log.info("runtime stopped")

    async def run_until_signalled(
        self,
        after_start: Callable[[], Awaitable[None]] | None = None,
        before_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Run until SIGTERM or SIGINT, then drain in-flight work and stop.

        ``before_stop`` runs first on the way out (the web server stops taking requests
        while the transport can still publish what its last ones committed).
        """
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await self.start()
        try:
            if after_start is not None:
                await after_start()
            await stop.wait()
            log.info("signal received, draining")
        finally:
            try:
                if before_stop is not None:
                    await before_stop()
            finally:
                await self.stop()


ServiceFactory = Callable[[Settings], Service]


def serve(factories: Sequence[ServiceFactory], settings: Settings | None = None) -> None:
    """Entry point body: run the given services until SIGTERM (on RabbitMQ or embedded)."""
    from blume_runtime.logging import configure_logging

    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)

    async def main() -> None:
        db = Database(settings.database)
        runtime = Runtime(settings, [factory(settings) for factory in factories], db)
        try:
            await runtime.run_until_signalled()
        finally:
            await db.dispose()

    asyncio.run(main())
