"""The transport port: how the runtime receives and publishes messages.

``RabbitTransport`` (aio-pika over RabbitMQ, in ``rabbit.py``) is production;
``InMemoryTransport`` is the embedded default, with the same topic routing, delayed retries,
dead letters and producer rule.
"""

from __future__ import annotations

import asyncio
import functools
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

import structlog
from blume_contracts.envelope import CONTENT_TYPE

from blume_runtime import metrics, wire
from blume_runtime.broker_users import EMBEDDED_SERVICE_USER, BrokerUsers
from blume_runtime.topology import QueueSpec

ATTEMPT_HEADER: Final = wire.ATTEMPT

log = structlog.get_logger("transport")


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    routing_key: str
    body: bytes
    message_id: str
    content_type: str = CONTENT_TYPE
    headers: dict[str, Any] = field(default_factory=dict)
    content_encoding: str | None = None


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
    settled: bool = False
    """True once one of the three settlements has gone through."""
    settle_error: BaseException | None = None
    """What made a settlement fail (the broker was unreachable, say); the message was not
    settled and the broker still holds it."""

    @abstractmethod
    async def ack(self) -> None: ...

    @abstractmethod
    async def retry_later(self, delay_seconds: float, *, error_class: str) -> None:
        """Schedule a redelivery (attempt + 1) after about ``delay_seconds``; settle this one."""

    @abstractmethod
    async def dead_letter(self, cause: DeadLetterCause, *, error_class: str | None = None) -> None:
        """Move the message to the service's dead-letter queue, recording why."""

    async def release(self) -> None:  # noqa: B027 - only brokers that can redeliver override it
        """Give an unsettled message back to the broker for redelivery (when it can take it)."""


class DeliverySettledError(RuntimeError):
    """A delivery was settled a second time."""


Consumer = Callable[[Delivery], Awaitable[None]]


async def deliver(consumer: Consumer, delivery: Delivery, *, service: str) -> None:
    """Hand a delivery to its consumer; whatever the consumer does, it ends settled once.

    A consumer that raises, or returns without settling, has its delivery dead-lettered
    (cause ``malformed``: nothing could read it) with one log line, never the body. If the
    broker failed us while settling, the message goes back to its queue instead: its
    delivery count rises towards the queue's delivery limit, so it cannot loop forever.
    """
    failure: Exception | None = None
    try:
        await consumer(delivery)
    except Exception as error:  # noqa: BLE001 - the transport is the last line of defence
        failure = error
    if delivery.settled:
        if failure is not None:
            log.error(
                "consumer failed after settling its delivery",
                service=service,
                message_id=delivery.message_id,
                error_type=type(failure).__name__,
            )
        return
    context = {
        "service": service,
        "message_id": delivery.message_id,
        "event_type": delivery.routing_key,
        "attempt": delivery.attempt,
        "size": len(delivery.body),
        "content_type": delivery.content_type,
        "error_type": type(failure).__name__ if failure is not None else None,
        "reason": "consumer raised" if failure is not None else "consumer did not settle",
    }
    if delivery.settle_error is None:
        try:
            await delivery.dead_letter(DeadLetterCause.MALFORMED, error_class="unhandled")
        except Exception as error:  # noqa: BLE001 - fall through to giving it back
            delivery.settle_error = delivery.settle_error or error
        else:
            metrics.DEAD_LETTERS.labels(service, DeadLetterCause.MALFORMED.value).inc()
            log.error("delivery dead-lettered by the transport", decision="dead_letter", **context)
            return
    try:
        await delivery.release()
    finally:
        log.error(
            "delivery could not be settled; the broker will redeliver it",
            decision="redeliver",
            settle_error=type(delivery.settle_error).__name__,
            **context,
        )


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

    def consumer_states(self) -> dict[str, bool]:
        """Per subscribed queue: whether this process has a live consumer on it."""
        return {}

    def consumers_lost_since(self) -> float | None:
        """Monotonic time since which some queue has had no consumer of ours (None: none)."""
        return None

    async def queue_depth(self, queue: str) -> int | None:
        """Messages ready in a subscribed queue, not yet delivered (None: cannot tell).

        How a consumer's lag is read: the access gateway refuses access while its own queue
        holds events it may be too far behind on (``blume_access_gateway.freshness``).
        """
        return None

    async def retry_depth(self, queue: str) -> int | None:
        """Messages of a subscribed queue waiting to be retried (in its delay queues on
        RabbitMQ), not counted by ``queue_depth`` (None: cannot tell). A transport that
        never retries has none."""
        return 0


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


@dataclass(frozen=True, slots=True)
class _Envelope:
    """A message on the in-memory broker, with the identity of whoever published it."""

    message: OutgoingMessage
    user_id: str | None


class _MemoryDelivery(Delivery):
    def __init__(self, envelope: _Envelope, transport: InMemoryTransport, queue: QueueSpec):
        message = envelope.message
        self._facts = wire.read_facts(
            envelope.user_id,
            message.headers,
            message.routing_key,
            trusted_users=transport.users.trusted_for(queue.service),
        )
        self._envelope = envelope
        self._transport = transport
        self._queue = queue
        self.body = message.body
        self.message_id = message.message_id
        self.routing_key = self._facts.event_type
        self.content_type = message.content_type
        self.content_encoding = message.content_encoding
        self.headers = dict(message.headers)
        self.producer = self._facts.producer
        self.attempt = self._facts.attempt
        self.first_failed_at = self._facts.first_failed_at

    def _again(self, attempt: int, error_class: str | None, **extra: str) -> OutgoingMessage:
        headers = wire.carried_headers(
            self._facts,
            self._envelope.message.headers,
            now=datetime.now(UTC),
            attempt=attempt,
            error_class=error_class,
        )
        return OutgoingMessage(
            self.routing_key,
            self.body,
            self.message_id or "",
            self.content_type or "",
            headers | extra,
            self.content_encoding,
        )

    def _settle(self) -> None:
        if self.settled:
            raise DeliverySettledError(f"message {self.message_id} was already settled")
        self.settled = True
        self._transport.settled()

    async def ack(self) -> None:
        self._settle()

    async def retry_later(self, delay_seconds: float, *, error_class: str) -> None:
        again = self._again(self.attempt + 1, error_class)
        self._settle()
        self._transport.schedule(again, self._queue, max(delay_seconds, 0.0))

    async def dead_letter(self, cause: DeadLetterCause, *, error_class: str | None = None) -> None:
        dead = self._again(
            self.attempt,
            error_class,
            **{wire.DEAD_LETTER_CAUSE: cause.value, wire.SERVICE: self._queue.service},
        )
        self._settle()
        self._transport.dead_letters.setdefault(self._queue.dead_letter_queue, []).append(dead)


class InMemoryTransport(Transport):
    """A single-process broker for the embedded default: topic routing, retries, DLQs, and
    ``blume.share.unrouted`` (what no binding matches goes to the specs that bind it).

    Publishers have identities as on RabbitMQ: the runtime's own services publish as the
    service user, and ``publish_as`` names an outside client (``blume-share send`` is the
    upstream client); deliveries carry the producer by the same rule as on RabbitMQ.
    """

    def __init__(self, users: BrokerUsers | None = None) -> None:
        self.users = users or BrokerUsers(EMBEDDED_SERVICE_USER)
        self._bindings: list[tuple[str, QueueSpec]] = []
        self._specs: dict[str, QueueSpec] = {}
        self._queues: dict[str, asyncio.Queue[_MemoryDelivery]] = {}
        self._consumers: dict[str, Consumer] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._unsettled = 0
        self._pending_retries = 0
        self._retrying: Counter[str] = Counter()
        """Per queue: scheduled retries not yet back on it."""
        self._became_idle = asyncio.Event()
        """Set exactly while ``idle``: every change of the two counts updates it."""
        self._became_idle.set()
        self.dead_letters: dict[str, list[OutgoingMessage]] = {}

    def subscribe(self, queue: QueueSpec, consumer: Consumer) -> None:
        self._specs[queue.name] = queue
        self._queues[queue.name] = asyncio.Queue()
        self._consumers[queue.name] = consumer
        self._bindings.extend((key, queue) for key in queue.binding_keys)

    async def start(self) -> None:
        for spec in self._specs.values():
            self._tasks.append(asyncio.create_task(self._consume(spec)))

    async def publish(self, message: OutgoingMessage) -> None:
        self.route(_Envelope(message, self.users.connection_user))

    async def publish_as(self, user: str | None, message: OutgoingMessage) -> None:
        """Publish with another identity, as an outside client with its own broker user."""
        self.route(_Envelope(message, user))

    def route(self, envelope: _Envelope) -> None:
        # A queue bound by several matching keys still gets one copy, as on RabbitMQ; what
        # matches no binding goes to the queues bound to the alternate exchange, once each.
        targets = {
            queue.name: queue
            for key, queue in self._bindings
            if topic_matches(key, envelope.message.routing_key)
        } or {name: spec for name, spec in self._specs.items() if spec.binds_unrouted}
        for queue in targets.values():
            self._enqueue(envelope, queue)

    def _enqueue(self, envelope: _Envelope, queue: QueueSpec) -> None:
        self._unsettled += 1
        self._became_idle.clear()
        self._queues[queue.name].put_nowait(_MemoryDelivery(envelope, self, queue))

    def settled(self) -> None:
        self._unsettled -= 1
        self._signal_if_idle()

    def _signal_if_idle(self) -> None:
        if self.idle:
            self._became_idle.set()

    def schedule(self, message: OutgoingMessage, queue: QueueSpec, delay_seconds: float) -> None:
        """Put a retried message back on its queue after the delay, as the service's user."""
        self._pending_retries += 1
        self._retrying[queue.name] += 1
        self._became_idle.clear()
        envelope = _Envelope(message, self.users.user_of(queue.service))

        def _redeliver() -> None:
            self._enqueue(envelope, queue)
            self._pending_retries -= 1
            self._retrying[queue.name] -= 1

        asyncio.get_running_loop().call_later(delay_seconds, _redeliver)

    @property
    def idle(self) -> bool:
        return self._unsettled == 0 and self._pending_retries == 0

    async def wait_idle(self) -> None:
        """Return once nothing is queued, being handled or waiting to be retried.

        Woken by the last settlement, not by polling: a delivery settles only after the
        events its handler committed are published, so a chain never looks idle halfway.
        """
        while not self.idle:
            await self._became_idle.wait()

    def consumer_states(self) -> dict[str, bool]:
        running = bool(self._tasks) and not any(task.done() for task in self._tasks)
        return dict.fromkeys(self._queues, running)

    async def queue_depth(self, queue: str) -> int | None:
        waiting = self._queues.get(queue)
        return None if waiting is None else waiting.qsize()

    async def retry_depth(self, queue: str) -> int | None:
        return self._retrying[queue] if queue in self._queues else None

    async def _consume(self, spec: QueueSpec) -> None:
        queue, consumer = self._queues[spec.name], self._consumers[spec.name]
        while True:
            delivery = await queue.get()
            await deliver(consumer, delivery, service=spec.service)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
