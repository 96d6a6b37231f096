"""Running a set of services in one process: production (RabbitMQ) or the embedded default."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

import structlog
from blume_contracts.registry import UPSTREAM

from blume_runtime.broker_definitions import produced_by
from blume_runtime.db import Database
from blume_runtime.lifecycle import Component, OutboxSweeper, Workers, start_all, stop_all
from blume_runtime.ops import OpsPortInUseError, OpsServer
from blume_runtime.outbox import OutboxRelay
from blume_runtime.rabbit import RabbitTransport
from blume_runtime.service import Service
from blume_runtime.settings import Settings
from blume_runtime.tracing import configure_tracing
from blume_runtime.transport import InMemoryTransport, OutgoingMessage, Transport
from blume_runtime.worker import Worker

log = structlog.get_logger("runtime")

EXIT_UNAVAILABLE = 3


class BrokerIdentityError(RuntimeError):
    """This process would publish as a broker user that BLUME_BROKER_USERS gives to no one
    of its services: its events would be refused as from an untrusted producer."""


def make_transport(settings: Settings, names: Sequence[str] = ()) -> Transport:
    if settings.amqp_url is None:
        return InMemoryTransport(settings.broker_user_map)
    return RabbitTransport(
        settings.amqp_url.get_secret_value(),
        users=settings.broker_user_map,
        prefetch=settings.prefetch,
        max_delay_seconds=settings.retry_max_delay_seconds,
        watchdog_seconds=settings.consumer_watchdog_seconds,
        name=f"blume-share {' '.join(names) or 'publisher'} (pid {os.getpid()})",
    )


class Runtime:
    """Services sharing one database engine, one transport and one outbox relay.

    With ``serve_ops`` (long-running processes), the ops port is served beside them.
    ``publishers`` names what else publishes through this runtime (the web gateway).

    Everything long-lived is a ``Component`` (``blume_runtime.lifecycle``), started in this
    order and stopped in reverse: the services' own (the audit sealer), the workers, the
    outbox sweeper, the ops port, then those ``add``-ed (the web server).
    """

    def __init__(
        self,
        settings: Settings,
        services: Sequence[Service],
        db: Database,
        *,
        serve_ops: bool = False,
        publishers: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.services = list(services)
        self.db = db
        self.names = [service.name for service in self.services] + list(publishers)
        self.transport = make_transport(settings, self.names)
        self.relay = OutboxRelay(db, self.transport, sweeps=self._sweeps(settings))
        for service in self.services:
            worker = Worker(service, db, self.relay, settings)
            self.transport.subscribe(service.queue, worker)
        self.ops = (
            OpsServer(settings, self.transport, db, self.names)
            if serve_ops and settings.ops_port
            else None
        )
        self._components: list[Component] = [
            *(component for service in self.services for component in service.components),
            Workers(self.transport),
            OutboxSweeper(self.relay, settings.outbox_poll_seconds),
            *([self.ops] if self.ops is not None else []),
        ]
        self._started: list[Component] = []

    def add(self, component: Component) -> None:
        """Own ``component`` too: started after the rest, stopped before them."""
        self._components.append(component)

    def _sweeps(self, settings: Settings) -> list[str] | None:
        """What this process's sweep publishes: everything with one broker user; with a
        user per service, only the types its own services produce."""
        if settings.broker_user_map.single_user:
            return None
        return sorted({event_type for name in self.names for event_type in produced_by(name)})

    def check_broker_identity(self) -> None:
        users = self.settings.broker_user_map
        if wrong := users.misassigned(self.names):
            raise BrokerIdentityError(
                f"BLUME_AMQP_URL connects as {users.connection_user!r}, but BLUME_BROKER_USERS "
                f"gives {', '.join(wrong)} other users: run each with its own user"
            )

    async def start(self) -> None:
        self.check_broker_identity()
        configure_tracing(self.names[0] if len(self.names) == 1 else "blume-share")
        if self.ops is not None:
            self.ops.bind()  # a busy port stops the process before it consumes anything
        self._started = await start_all(self._components)
        log.info(
            "runtime started",
            services=[service.name for service in self.services],
            broker="in-memory" if self.settings.embedded_broker else "rabbitmq",
            database="sqlite" if self.db.is_sqlite else "postgresql",
        )

    async def publish(self, message: OutgoingMessage) -> None:
        await self.transport.publish(message)

    async def publish_request(self, message: OutgoingMessage) -> None:
        """A request from outside (``blume-share send``): on the embedded default it is
        published as the upstream client, as OmegaAI publishes with its own broker user."""
        if isinstance(self.transport, InMemoryTransport):
            await self.transport.publish_as(UPSTREAM, message)
        else:
            await self.transport.publish(message)

    async def wait_until_idle(self) -> None:
        """Embedded default only: return once no message is queued, in flight or retrying,
        and the outbox holds nothing unpublished.

        Driven by the transport's settlements (``InMemoryTransport.wait_idle``), no sleeps;
        a sweep then publishes what a failed relay left in the outbox, which starts the wait
        again. The relay's own sweep lock makes a background sweep finish first.
        """
        transport = self.transport
        if not isinstance(transport, InMemoryTransport):
            raise RuntimeError("idle detection needs the embedded broker")
        while True:
            await transport.wait_idle()
            if await self.relay.sweep(older_than=timedelta(0)) == 0 and transport.idle:
                return

    async def stop(self) -> None:
        started, self._started = self._started, []
        try:
            await stop_all(started)
        finally:
            try:
                await self.relay.forget_published()
            except Exception as error:  # noqa: BLE001 - rows left behind are only swept again
                log.warning("outbox clean-up deferred", error_type=type(error).__name__)
        log.info("runtime stopped")

    async def run_until_signalled(
        self, on_started: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Run until SIGTERM or SIGINT, then drain in-flight work and stop.

        ``on_started`` runs once everything is running (``blume-share send`` publishes).
        """
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await self.start()
        try:
            if on_started is not None:
                await on_started()
            await stop.wait()
            log.info("signal received, draining")
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
        services = [factory(settings) for factory in factories]
        runtime = Runtime(settings, services, db, serve_ops=True)
        try:
            await runtime.run_until_signalled()
        finally:
            await db.dispose()

    try:
        asyncio.run(main())
    except (OpsPortInUseError, BrokerIdentityError) as error:
        log.error("cannot start", error=str(error))
        raise SystemExit(EXIT_UNAVAILABLE) from None
