"""How long a revocation and a lock box take to reach the access gateway, on real services.

The gateway decides access from projections fed by its own queue (issue 13), so a
revocation or a consent change reaches it through the broker: the dispatcher's
``share.revoked``, blume_publisher's ``patient.account.updated``. This measures that delay
where it matters, at the gateway's HTTP answer, on RabbitMQ and PostgreSQL:

- *revocation*: N external shares are sent and their links minted; each link page answers
  200. Then, one at a time, a ``share.revoke.requested`` is published (as ``blume-share
  revoke`` does) and the link page is polled every few milliseconds until it answers 410.
- *lock box*: N patients with a published study each, signed in to the portal; each study
  page answers 200. Then, one at a time, the account is imported again with the consent
  directive ``withhold_portal`` (as ``blume-share patients import`` does: commit, then
  publish ``patient.account.updated``) and the study page is polled until it answers 404.

Each latency runs from just before the publish (the import's commit) to the first refusing
answer. Every worker but the notifier (no email is needed) runs in this process, wired as
``blume-share run`` wires them, with the gateway served over HTTP on a free local port.
Isolation as in ``bench.harness``: a fresh database and vhost, removed at the end.

Run: ``uv run python -m bench.gateway_latency [--count N]``; exits 1 if any latency is 1 s
or more, or a page never changed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Final

import aio_pika
import httpx
from blume_access_gateway import NAME as GATEWAY
from blume_access_gateway import Freshness, GatewaySettings, build, queue_probe
from blume_access_gateway.gateway import Gateway
from blume_access_gateway.server import HttpServer
from blume_contracts.envelope import EXCHANGE
from blume_publisher import NAME as PUBLISHER
from blume_publisher import import_accounts, parse_accounts
from blume_runtime.app import Runtime
from blume_runtime.db import Database
from blume_runtime.logging import configure_logging
from blume_runtime.outbox import OutboxRelay
from blume_runtime.rabbit import RabbitTransport
from blume_runtime.sealing import Sealer
from blume_runtime.settings import Settings
from blume_share.requests import PreparedRequest, parse_requests, revoke_request
from blume_share.schema import upgrade
from blume_share.services import SERVICES
from starlette.responses import Response

from bench.harness import DEFAULT_AMQP, DEFAULT_POSTGRES, Isolation
from bench.throughput import product_settings

BUDGET_SECONDS: Final = 1.0
POLL_SECONDS: Final = 0.005
GIVE_UP_SECONDS: Final = 10.0
TENANT: Final = "demo-hospital"
WORKERS: Final = ("share_dispatcher", "link_issuer", "blume_publisher", "audit_sink")


@dataclass(frozen=True, slots=True)
class Figures:
    what: str
    latencies: list[float]
    budget: float = BUDGET_SECONDS

    @property
    def within_budget(self) -> bool:
        return bool(self.latencies) and max(self.latencies) < self.budget

    def line(self) -> str:
        ms = [value * 1000 for value in self.latencies]
        p90 = statistics.quantiles(ms, n=10, method="inclusive")[-1]
        return (
            f"{self.what:<12} n={len(ms):<3} median {statistics.median(ms):6.1f} ms  "
            f"p90 {p90:6.1f} ms  max {max(ms):6.1f} ms  "
            f"({'all under' if self.within_budget else 'NOT all under'} {self.budget:g} s)"
        )


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 120
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def time_until(answer: Callable[[], Awaitable[int]], status: int) -> float:
    """Seconds from now until ``answer()`` returns ``status``."""
    started = time.perf_counter()
    while True:
        if await answer() == status:
            return time.perf_counter() - started
        if time.perf_counter() - started > GIVE_UP_SECONDS:
            raise TimeoutError(f"the page never answered {status}")
        await asyncio.sleep(POLL_SECONDS)


class Links:
    """Tokens of the links minted, read as the notifier reads them (unsealed)."""

    def __init__(self, settings: Settings) -> None:
        self._sealer = Sealer.from_settings(settings)
        self.tokens: dict[str, str] = {}

    async def listen(self, amqp_url: str) -> aio_pika.abc.AbstractRobustConnection:
        connection = await aio_pika.connect_robust(amqp_url)
        channel = await connection.channel()
        exchange = await channel.get_exchange(EXCHANGE)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "share.link.issued")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                data = json.loads(message.body)["data"]
                link = self._sealer.unseal(data["sealed_link"])
                self.tokens[data["share_id"]] = link.rsplit("/", 1)[1]

        await queue.consume(on_message)
        return connection


class Publisher:
    """One confirmed publishing connection, as a client that stays connected has: the
    latencies measure the path to the gateway, not a connection handshake each time."""

    def __init__(self, settings: Settings, db: Database) -> None:
        assert settings.amqp_url is not None
        self.transport = RabbitTransport(
            settings.amqp_url.get_secret_value(), users=settings.broker_user_map
        )
        self.relay = OutboxRelay(db, self.transport)
        self.db = db

    async def requests(self, requests: list[PreparedRequest]) -> None:
        for request in requests:
            await self.transport.publish(request.message())

    async def import_accounts(self, text: str) -> None:
        """What ``blume-share patients import`` does: commit with the events, then publish."""
        async with self.db.transaction() as session:
            result = await import_accounts(
                session, parse_accounts(text), correlation_id="bench-import"
            )
        await self.relay.publish_committed(result.staged)


def account_lines(count: int, consent: list[str]) -> str:
    return "\n".join(
        json.dumps(
            {
                "blume_patient_id": f"bp-bench-{n:04d}",
                "tenant_id": TENANT,
                "mrn": f"MRN-BENCH-{n:04d}",
                "email": f"patient{n}@mail.example",
                "locale": "en-CA",
                "email_notifications": False,
                "status": "active",
                "consent": consent,
            }
        )
        for n in range(count)
    )


def blume_requests(count: int) -> list[PreparedRequest]:
    example = json.loads(
        files("blume_share").joinpath("examples/study-send-blume.json").read_text()
    )
    requests = []
    for n in range(count):
        study = {
            **example["study"],
            "patient": {**example["study"]["patient"], "mrn": f"MRN-BENCH-{n:04d}"},
        }
        request = {
            **example,
            "study": study,
            "patient_account": {"blume_patient_id": f"bp-bench-{n:04d}"},
        }
        requests.extend(parse_requests(json.dumps(request)))
    return requests


@dataclass
class BenchGateway:
    """The workers and the gateway served over HTTP in this process, wired as
    ``blume-share run`` wires them, with a link listener and a publisher beside them."""

    db: Database
    runtime: Runtime
    gateway: Gateway
    server: HttpServer
    links: Links
    publisher: Publisher
    listener: aio_pika.abc.AbstractRobustConnection

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def stop(self) -> None:
        await self.server.stop()
        await self.publisher.transport.stop()
        await self.runtime.stop()
        await self.listener.close()
        await self.db.dispose()


async def start_gateway(settings: Settings, workers: tuple[str, ...]) -> BenchGateway:
    db = Database(settings.database)
    freshness = Freshness(GatewaySettings().projection_max_lag_seconds)
    services = [SERVICES[name](settings) for name in workers] + [build(settings, freshness)]
    runtime = Runtime(settings, services, db)
    freshness.attach(queue_probe(runtime.transport, GATEWAY))
    config = GatewaySettings(
        _env_file=None,  # type: ignore[call-arg]
        gateway_secret_key="bench-secret-" + "x" * 40,
        cookie_secure=False,
        rate_limit_per_ip="100000/minute",
        rate_limit_per_token="100000/minute",
        rate_limit_viewer="100000/minute",
    )
    # The gateway's own schema and outbox, as ``blume-share run`` gives it.
    gateway = Gateway.build(
        settings,
        runtime.database_for(GATEWAY),
        runtime.relay_for(GATEWAY),
        freshness,
        config=config,
    )
    server = HttpServer(gateway, "127.0.0.1", 0)
    links = Links(settings)
    # The import writes blume_publisher's tables and outbox, as ``patients import`` does.
    publisher = Publisher(settings, db.in_schema(PUBLISHER))
    await runtime.start()  # declares the exchange the listener binds to
    assert settings.amqp_url is not None
    listener = await links.listen(settings.amqp_url.get_secret_value())
    await publisher.transport.connect()
    await server.start()
    return BenchGateway(db, runtime, gateway, server, links, publisher, listener)


async def measure(settings: Settings, count: int) -> list[Figures]:
    bench = await start_gateway(settings, WORKERS)
    try:
        async with httpx.AsyncClient(base_url=bench.base) as http:
            revocation = await measure_revocations(bench.publisher, http, bench.links, count)
            lock_box = await measure_lock_box(bench.publisher, bench.db, http, bench.gateway, count)
    finally:
        await bench.stop()
    return [revocation, lock_box]


async def measure_revocations(
    publisher: Publisher, http: httpx.AsyncClient, links: Links, count: int
) -> Figures:
    example = files("blume_share").joinpath("examples/study-send-request.json").read_text()
    requests = [request for _ in range(count) for request in parse_requests(example)]
    await publisher.requests(requests)

    async def all_open() -> bool:
        if len(links.tokens) < count:
            return False
        answers = [(await http.get(f"/s/{links.tokens[r.share_id]}")).status_code for r in requests]
        return all(status == 200 for status in answers)

    await until(all_open, f"{count} usable links")
    latencies = []
    for request in requests:
        token = links.tokens[request.share_id]
        revoke = revoke_request(
            request.share_id, TENANT, request.event.correlationid, "bench", "latency"
        )
        started = time.perf_counter()
        await publisher.requests([revoke])

        async def status(token: str = token) -> int:
            return (await http.get(f"/s/{token}")).status_code

        await time_until(status, 410)
        latencies.append(time.perf_counter() - started)
    return Figures("revocation", latencies)


async def measure_lock_box(
    publisher: Publisher, db: Database, http: httpx.AsyncClient, gateway: Gateway, count: int
) -> Figures:
    await publisher.import_accounts(account_lines(count, []))
    requests = blume_requests(count)
    await publisher.requests(requests)
    entries: dict[str, str] = {}

    async def all_published() -> bool:
        from blume_access_gateway.models import ProjectedEntry
        from sqlmodel import select

        async with db.transaction() as session:
            rows = (await session.exec(select(ProjectedEntry))).all()
        entries.update({row.blume_patient_id: row.entry_id for row in rows})
        return len(entries) >= count

    await until(all_published, f"{count} published entries")
    latencies = []
    lines = account_lines(count, ["withhold_portal"]).splitlines()
    for n, line in enumerate(lines):
        patient = f"bp-bench-{n:04d}"
        cookies = await patient_cookie(gateway, patient)

        async def status(patient: str = patient, cookies: dict[str, str] = cookies) -> int:
            page = await http.get(f"/blume/studies/{entries[patient]}", cookies=cookies)
            return page.status_code

        if await status() != 200:
            raise RuntimeError(f"{patient}'s study is not shown before the lock box")
        started = time.perf_counter()
        await publisher.import_accounts(line)
        await time_until(status, 404)
        latencies.append(time.perf_counter() - started)
    return Figures("lock box", latencies)


async def patient_cookie(gateway: Gateway, patient: str) -> dict[str, str]:
    """The cookie the portal sets after the patient's sign-in: it names a server-side
    session that the portal starts as it does for a real sign-in."""
    carrier = Response()
    gateway.write_session(carrier, "patient", await gateway.portal.sign_in(patient))
    name, _, rest = carrier.headers["set-cookie"].partition("=")
    return {name: rest.split(";", 1)[0]}


def start_bench() -> Isolation:
    """How a bench of the gateway starts: the product logging only warnings (JSON), and a
    record of what the run creates on the test services (``BLUME_TEST_POSTGRES_URL`` and
    ``BLUME_TEST_AMQP_URL``, else the local ones), to remove it all afterwards."""
    configure_logging("WARNING", "json")
    return Isolation(
        os.environ.get("BLUME_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
        os.environ.get("BLUME_TEST_AMQP_URL", DEFAULT_AMQP),
    )


def isolated_settings(resources: Isolation, purpose: str) -> Settings:
    """The product's settings on a new, migrated database and a new vhost named after
    ``purpose``; no SMTP server (nothing measured here sends an email)."""
    database_url = resources.create_database()
    amqp_url = resources.create_vhost(purpose)
    upgrade(database_url)
    return product_settings(amqp_url, database_url, "smtp://127.0.0.1:1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50, help="revocations and lock boxes")
    arguments = parser.parse_args()
    resources = start_bench()
    try:
        settings = isolated_settings(resources, "gateway")
        figures = asyncio.run(measure(settings, arguments.count))
    finally:
        resources.remove_all()
    for figure in figures:
        print(figure.line())
    return 0 if all(figure.within_budget for figure in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
