"""Consumers, raw publishers and broker commands for the transport's integration tests."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aio_pika
import pika
from blume_runtime.broker_definitions import definitions
from blume_runtime.broker_users import BrokerUsers
from blume_runtime.rabbit import RabbitTransport
from blume_runtime.topology import QueueSpec
from blume_runtime.transport import DeadLetterCause, Delivery, OutgoingMessage

Settle = Callable[[Delivery], Awaitable[None]]


def rabbitmqctl(*args: str, input_text: str | None = None) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def vhost_of(amqp_url: str) -> str:
    return unquote(urlsplit(amqp_url).path.lstrip("/"))


def queue_rows(amqp_url: str, *columns: str) -> dict[str, list[str]]:
    """``rabbitmqctl list_queues`` for the test's vhost: queue name to the other columns."""
    listed = rabbitmqctl("list_queues", "-p", vhost_of(amqp_url), "name", *columns)
    rows = [line.split("\t") for line in listed.splitlines()[1:] if "\t" in line]
    return {row[0]: row[1:] for row in rows}


async def depth(amqp_url: str, queue: str) -> int:
    """Messages ready in ``queue``, as the broker answers a passive declare (no stats lag)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


async def until_depth(amqp_url: str, queue: str, expected: int, *, within: float) -> None:
    async with asyncio.timeout(within):
        while True:
            if await depth(amqp_url, queue) == expected:
                return
            await asyncio.sleep(0.1)


async def ack(delivery: Delivery) -> None:
    await delivery.ack()


async def dead_letter(delivery: Delivery) -> None:
    await delivery.dead_letter(DeadLetterCause.MALFORMED)


@dataclass
class Received:
    """What a test consumer was handed, in order."""

    deliveries: list[Delivery] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        self.times.append(asyncio.get_running_loop().time())
        self._arrived.set()

    async def wait_for(self, count: int, within: float = 30) -> list[Delivery]:
        async with asyncio.timeout(within):
            while len(self.deliveries) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.deliveries


@asynccontextmanager
async def consuming(
    amqp_url: str, spec: QueueSpec, settle: Settle = ack, **options: Any
) -> AsyncIterator[tuple[RabbitTransport, Received]]:
    """A started transport whose consumer records each delivery, then settles it."""
    received = Received()
    transport = RabbitTransport(amqp_url, **options)

    async def consumer(delivery: Delivery) -> None:
        received.add(delivery)
        await settle(delivery)

    transport.subscribe(spec, consumer)
    await transport.start()
    try:
        yield transport, received
    finally:
        await transport.stop()


@asynccontextmanager
async def audit_observer(
    amqp_url: str,
) -> AsyncIterator[Callable[[], Awaitable[list[dict[str, Any]]]]]:
    """A queue bound to ``ops.#`` (as the audit sink's ``#`` would be): the ops events."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("blume.share", "topic", durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "ops.#")
        seen: list[dict[str, Any]] = []

        async def drain() -> list[dict[str, Any]]:
            while (found := await queue.get(no_ack=True, fail=False)) is not None:
                seen.append(json.loads(found.body))
            return seen

        yield drain


async def collect(
    amqp_url: str, spec: QueueSpec, settle: Settle, count: int, *messages: OutgoingMessage
) -> list[Delivery]:
    """Publish ``messages`` through a consuming transport; return the first ``count``."""
    async with consuming(amqp_url, spec, settle) as (transport, received):
        for message in messages:
            await transport.publish(message)
        return await received.wait_for(count)


async def publish_raw(
    amqp_url: str,
    routing_key: str,
    body: bytes,
    properties: pika.BasicProperties | None = None,
    *,
    exchange: str = "blume.share",
) -> None:
    """Publish with pika (an independent client), confirmed; any properties, any body."""

    def publish() -> None:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.basic_publish(exchange, routing_key, body, properties or pika.BasicProperties())
        finally:
            connection.close()

    await asyncio.to_thread(publish)


def url_for(amqp_url: str, user: str, password: str) -> str:
    parts = urlsplit(amqp_url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class BrokerUsersOnVhost:
    """The shipped definitions applied to a test vhost, with suffixed users and passwords."""

    amqp_url: str
    suffix: str
    passwords: dict[str, str]

    def user(self, name: str) -> str:
        return f"{name}{self.suffix}"

    def url(self, name: str) -> str:
        return url_for(self.amqp_url, self.user(name), self.passwords[name])

    def users(self, connecting_as: str) -> BrokerUsers:
        """The resolver a process connecting as ``connecting_as`` builds from the map."""
        mapping = {name: self.user(name) for name in self.passwords if name != "omegaai"}
        return BrokerUsers(self.user(connecting_as), mapping)


def password_hash(password: str) -> str:
    """RabbitMQ's salted SHA-256 (``rabbit_password_hashing_sha256``), as definitions hold it."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


@asynccontextmanager
async def shipped_users(amqp_url: str) -> AsyncIterator[BrokerUsersOnVhost]:
    """Import ``blume-share broker definitions`` for the test vhost; delete its users after.

    The shipped document has no passwords; here each user gets a random one (as an operator
    would set them from the secret store) so that the test can log in as it.
    """
    suffix = f"-t{uuid.uuid4().hex[:8]}"
    document = definitions(vhost_of(amqp_url), user_suffix=suffix)
    passwords: dict[str, str] = {}
    for user in document["users"]:
        password = uuid.uuid4().hex
        passwords[user["name"].removesuffix(suffix)] = password
        user["password_hash"] = password_hash(password)
    rabbitmqctl("import_definitions", input_text=json.dumps(document))
    try:
        await _until_imported(vhost_of(amqp_url), len(document["bindings"]))
        yield BrokerUsersOnVhost(amqp_url, suffix, passwords)
    finally:
        deletions = [
            await asyncio.create_subprocess_exec(
                "rabbitmqctl",
                "-q",
                "delete_user",
                name + suffix,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            for name in passwords
        ]
        await asyncio.gather(*(deletion.wait() for deletion in deletions))


async def _until_imported(vhost: str, bindings: int) -> None:
    """``import_definitions`` may return before the import is done: wait for the exchange
    and for the bindings (beyond the default exchange's, one per queue)."""

    def imported() -> bool:
        if "blume.share" not in rabbitmqctl("list_exchanges", "-p", vhost, "name").split():
            return False
        listed = rabbitmqctl("list_bindings", "-p", vhost, "source_name").splitlines()[1:]
        return sum(1 for source in listed if source.strip()) >= bindings

    await until(imported, within=30)


async def until(condition: Callable[[], bool], *, within: float, every: float = 0.05) -> None:
    """Poll ``condition`` until it holds; fail the test (TimeoutError) after ``within``."""
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(every)


async def refused(url: str, exchange: str, routing_key: str, **properties: str) -> str:
    """Publish with aio-pika directly; return the broker's refusal ('' if it accepted)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        try:
            await target.publish(aio_pika.Message(b"{}", **properties), routing_key)  # type: ignore[arg-type]
        except aio_pika.exceptions.AMQPError as error:
            return str(error)
    return ""
