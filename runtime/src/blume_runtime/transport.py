"""The transport port: how the runtime receives and publishes messages.

``RabbitTransport`` (FastStream over RabbitMQ) is production; ``InMemoryTransport`` is the
embedded default, with the same topic routing, retry and dead-letter semantics.
"""

from __future__ import annotations

import asyncio
import functools
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from blume_contracts.envelope import CONTENT_TYPE

from blume_runtime.identity import EMBEDDED_BROKER_USER
from blume_runtime.topology import QueueSpec

ATTEMPT_HEADER: Final = "x-blume-attempt"


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    routing_key: str
    body: bytes
    message_id: str
    content_type: str = CONTENT_TYPE
    headers: dict[str, str | int] = field(default_factory=dict)


class DeadLetterCause(StrEnum):
    """Why a message was dead-lettered: what ``blume-share dlq list`` shows per message."""

    MALFORMED = "malformed"
    """Not a CloudEvent we can read (body, content type or encoding, size)."""
    CONTRACT = "contract"
    """A CloudEvent whose data breaks its contract, or a permanent handler error."""
    UNTRUSTED_PRODUCER = "untrusted_producer"
    """An internal event type from a publisher the registry does not name as its producer."""
    EXHAUSTED = "exhausted"
    """Transient failures outlasted their error class's retry budget."""
    DELIVERY_LIMIT = "delivery_limit"
    """The broker gave up after the message killed its consumer too often."""


class Delivery(ABC):
    """One received message and the three ways to settle it.

    Every delivery is settled exactly once: ``ack``, ``retry_later`` or ``dead_letter``.
    """

    body: bytes
    message_id: str | None
    routing_key: str
    content_type: str | None = None
    content_encoding: str | None = None
    headers: Mapping[str, Any] = {}
    producer: str | None = None
    """The broker user that published the message (the AMQP ``user_id``, which RabbitMQ
    validates against the connection), kept across the service's own retries and operator
    replays; None when the publisher did not set one."""
    attempt: int
    """1 on first delivery; counts delayed retries, not broker redeliveries."""
    first_failed_at: datetime | None = None
    """When this message first failed transiently (None before its first retry)."""

    @abstractmethod
    async def ack(self) -> None: ...

    @abstractmethod
    async def retry_later(self, delay_seconds: float, *, error_class: str) -> None:
        """Schedule a redelivery (attempt + 1) after about ``delay_seconds``; settle this one."""

    @abstractmethod
    async def dead_letter(self, cause: DeadLetterCause, *, error_class: str | None = None) -> None:
        """Move the message to the service's dead-letter queue, recording why."""


Consumer = Callable[[Delivery], Awaitable[None]]


class Transport(ABC):
    @abstractmethod
    def subscribe(self, queue: QueueSpec, consumer: Consumer) -> None:
        """Register a consumer; call before ``start``."""

    @abstractmethod
    async def start(self) -> None:
        """Declare the topology (idempotently) and start consuming."""

    @abstractmethod
    async def publish(self, message: OutgoingMessage) -> None:
        """Publish persistently; return only once the broker has confirmed it."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop consuming, let in-flight work finish, close."""


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """AMQP topic semantics: ``*`` is exactly one word, ``#`` is zero or more words."""
    return _match(tuple(binding_key.split(".")), tuple(routing_key.split(".")))


@functools.cache
def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[skip:]) for skip in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _match(rest, words[1:])


@dataclass(slots=True)
class _MemoryDelivery(Delivery):
    body: bytes
    message_id: str | None
    routing_key: str
    attempt: int
    _transport: InMemoryTransport
    _queue: QueueSpec
    content_type: str | None = CONTENT_TYPE
    producer: str | None = None
    first_failed_at: datetime | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)

    async def ack(self) -> None:
        self._transport.settled(self._queue)

    async def retry_later(self, delay_seconds: float, *, error_class: str) -> None:
        del delay_seconds  # the skeleton keeps the fixed embedded delay
        self._transport.schedule_retry(self, self._queue, error_class)
        self._transport.settled(self._queue)

    async def dead_letter(self, cause: DeadLetterCause, *, error_class: str | None = None) -> None:
        del cause, error_class
        self._transport.dead_letters.setdefault(self._queue.dead_letter_queue, []).append(
            OutgoingMessage(self.routing_key, self.body, self.message_id or "")
        )
        self._transport.settled(self._queue)


class InMemoryTransport(Transport):
    """A single-process broker for the embedded default: topic routing, retries, DLQs."""

    def __init__(
        self, *, retry_delay_seconds: float = 0.5, publisher: str | None = EMBEDDED_BROKER_USER
    ) -> None:
        self._retry_delay = retry_delay_seconds
        self._publisher = publisher
        self._bindings: list[tuple[str, QueueSpec]] = []
        self._queues: dict[str, asyncio.Queue[_MemoryDelivery]] = {}
        self._consumers: dict[str, Consumer] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._unsettled = 0
        self._pending_retries = 0
        self.dead_letters: dict[str, list[OutgoingMessage]] = {}

    def subscribe(self, queue: QueueSpec, consumer: Consumer) -> None:
        self._queues[queue.name] = asyncio.Queue()
        self._consumers[queue.name] = consumer
        self._bindings.extend((key, queue) for key in queue.binding_keys)

    async def start(self) -> None:
        for name, consumer in self._consumers.items():
            self._tasks.append(asyncio.create_task(self._consume(name, consumer)))

    async def publish(self, message: OutgoingMessage) -> None:
        # A queue bound by several matching keys still gets one copy, as on RabbitMQ.
        targets = {
            queue.name: queue
            for key, queue in self._bindings
            if topic_matches(key, message.routing_key)
        }
        for queue in targets.values():
            delivery = _MemoryDelivery(
                message.body,
                message.message_id,
                message.routing_key,
                1,
                self,
                queue,
                content_type=message.content_type,
                producer=self._publisher,
            )
            self._enqueue(delivery, queue)

    def _enqueue(self, delivery: _MemoryDelivery, queue: QueueSpec) -> None:
        self._unsettled += 1
        self._queues[queue.name].put_nowait(delivery)

    def settled(self, _queue: QueueSpec) -> None:
        self._unsettled -= 1

    def schedule_retry(self, delivery: _MemoryDelivery, queue: QueueSpec, error_class: str) -> None:
        again = _MemoryDelivery(
            delivery.body,
            delivery.message_id,
            delivery.routing_key,
            delivery.attempt + 1,
            self,
            queue,
            content_type=delivery.content_type,
            producer=delivery.producer,
            first_failed_at=delivery.first_failed_at or datetime.now(UTC),
            headers={"x-blume-error-class": error_class},
        )
        self._pending_retries += 1

        def _redeliver() -> None:
            self._pending_retries -= 1
            self._enqueue(again, queue)

        asyncio.get_running_loop().call_later(self._retry_delay, _redeliver)

    @property
    def idle(self) -> bool:
        return self._unsettled == 0 and self._pending_retries == 0

    async def _consume(self, name: str, consumer: Consumer) -> None:
        queue = self._queues[name]
        while True:
            delivery = await queue.get()
            await consumer(delivery)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
