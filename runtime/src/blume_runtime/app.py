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
from blume_runtime.db import AuditStagingUnavailableError, Database
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
    """Services sharing one transport, each with its own schema and outbox relay.

    ``db`` is the process's database; each service (and each of ``publishers``) uses its
    own schema of it (``Database.in_schema``), or its own login if
    ``BLUME_<SERVICE>_DATABASE_URL`` is set (``Settings.service_database``). Services
    sharing one ``Database`` (all of them on SQLite) share one relay.

    With ``serve_ops`` (long-running processes), the ops port is served beside them.
    ``publishers`` names what else publishes through this runtime (the web gateway).

    Everything long-lived is a ``Component`` (``blume_runtime.lifecycle``), started in this
    order and stopped in reverse: the services' own (the audit sealer), the workers, the
    outbox sweepers, the ops port, then those ``add``-ed (the web server).
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
        self._own_databases: list[Database] = []
        self.databases = {name: self._database(name) for name in self.names}
        self.relays = self._relays(settings)
        for service in self.services:
            worker = Worker(
                service, self.databases[service.name], self.relay_for(service.name), settings
            )
            self.transport.subscribe(service.queue, worker)
        self.ops = (
            OpsServer(settings, self.transport, db, self.names, databases=self.databases)
            if serve_ops and settings.ops_port
            else None
        )
        self._components: list[Component] = [
            *(component for service in self.services for component in service.components),
            Workers(self.transport),
            *(
                OutboxSweeper(relay, settings.outbox_poll_seconds)
                for relay in self._distinct_relays()
            ),
            *([self.ops] if self.ops is not None else []),
        ]
        self._started: list[Component] = []

    def _database(self, name: str) -> Database:
        if not self.settings.has_own_database(name):
            return self.db.in_schema(name)
        own = Database(
            self.settings.service_database(name),
            schema=name,
            stages_audit=None,
            pool_size=self.settings.database_pool_size,
        )
        self._own_databases.append(own)
        return own

    def database_for(self, name: str) -> Database:
        """The database (schema) of ``name``, one of this runtime's services or publishers."""
        return self.databases[name]

    def relay_for(self, name: str) -> OutboxRelay:
        """The relay of ``name``'s outbox: what it commits is published and swept by it."""
        return self.relays[name]

    def _relays(self, settings: Settings) -> dict[str, OutboxRelay]:
        relays: dict[int, OutboxRelay] = {}
        for database in self.databases.values():
            if id(database) not in relays:
                sharing = [name for name, used in self.databases.items() if used is database]
                relays[id(database)] = OutboxRelay(
                    database, self.transport, sweeps=self._sweeps(settings, sharing)
                )
        return {name: relays[id(database)] for name, database in self.databases.items()}

    def _distinct_relays(self) -> list[OutboxRelay]:
        return list({id(relay): relay for relay in self.relays.values()}.values())

    async def sweep(self, *, older_than: timedelta) -> int:
        """Sweep every outbox of this runtime; return how many rows were published."""
        return sum([await relay.sweep(older_than=older_than) for relay in self._distinct_relays()])

    def add(self, component: Component) -> None:
        """Own ``component`` too: started after the rest, stopped before them."""
        self._components.append(component)

    @staticmethod
    def _sweeps(settings: Settings, names: Sequence[str]) -> list[str] | None:
        """What a sweep of the outbox of ``names`` publishes: everything with one broker
        user; with a user per service, only the types those services produce."""
        if settings.broker_user_map.single_user:
            return None
        return sorted({event_type for name in names for event_type in produced_by(name)})

    def check_broker_identity(self) -> None:
        users = self.settings.broker_user_map
        if wrong := users.misassigned(self.names):
            raise BrokerIdentityError(
                f"BLUME_AMQP_URL connects as {users.connection_user!r}, but BLUME_BROKER_USERS "
                f"gives {', '.join(wrong)} other users: run each with its own user"
            )

    async def check_audit_staging(self) -> None:
        """Each service's and publisher's database stages its events' audit rows, unless the
        audit sink records copies (``BLUME_AUDIT_COPIES``): else its events would be lost to
        the audit store, and the process must not start."""
        for name, database in self.databases.items():
            if not await database.resolve_audit_staging() and not self.settings.audit_copies:
                raise AuditStagingUnavailableError(
                    f"{name} cannot stage audit rows: its login may not insert into "
                    f"audit_sink.audit_pending in its database (migrate, or grant it), or, "
                    f"where some service's database is not the audit sink's, set "
                    f"BLUME_AUDIT_COPIES=true on every service"
                )

    async def start(self) -> None:
        self.check_broker_identity()
        await self.check_audit_staging()
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
            if await self.sweep(older_than=timedelta(0)) == 0 and transport.idle:
                return

    async def stop(self) -> None:
        started, self._started = self._started, []
        try:
            await stop_all(started)
        finally:
            for relay in self._distinct_relays():
                try:
                    await relay.forget_published()
                except Exception as error:  # noqa: BLE001 - rows left behind are swept again
                    log.warning("outbox clean-up deferred", error_type=type(error).__name__)
            for own in self._own_databases:
                await own.dispose()
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
        db = Database(settings.database, pool_size=settings.database_pool_size)
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
