"""The production transport: FastStream's RabbitBroker over RabbitMQ.

Topology (declared idempotently at start): the durable topic exchange ``blume.share``; per
service a quorum queue bound by its event types, dead-lettering to its own quorum DLQ, and a
quorum retry queue whose TTL sends messages back to the service queue after a delay.
Publishing waits for the broker's confirm; consumers ack only after the work is committed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from faststream import AckPolicy
from faststream.rabbit import (
    Channel,
    ExchangeType,
    QueueType,
    RabbitBroker,
    RabbitExchange,
    RabbitQueue,
)
from faststream.rabbit.annotations import RabbitMessage

from blume_runtime.identity import DEFAULT_AMQP_USER
from blume_runtime.topology import DELIVERY_LIMIT, QueueSpec
from blume_runtime.transport import (
    ATTEMPT_HEADER,
    Consumer,
    DeadLetterCause,
    Delivery,
    OutgoingMessage,
    Transport,
)

PRODUCER_HEADER: Final = "x-blume-producer"
FIRST_FAILURE_HEADER: Final = "x-blume-first-failure-at"
ERROR_CLASS_HEADER: Final = "x-blume-error-class"


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def exchange() -> RabbitExchange:
    from blume_contracts.envelope import EXCHANGE

    return RabbitExchange(EXCHANGE, type=ExchangeType.TOPIC, durable=True)


def service_queue(spec: QueueSpec) -> RabbitQueue:
    return RabbitQueue(
        spec.name,
        durable=True,
        queue_type=QueueType.QUORUM,
        arguments={
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": spec.dead_letter_queue,
            "x-delivery-limit": DELIVERY_LIMIT,
        },
    )


def retry_queue(spec: QueueSpec, delay_seconds: float) -> RabbitQueue:
    return RabbitQueue(
        spec.retry_queue,
        durable=True,
        queue_type=QueueType.QUORUM,
        arguments={
            "x-message-ttl": int(delay_seconds * 1000),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": spec.name,
        },
    )


def dead_letter_queue(spec: QueueSpec) -> RabbitQueue:
    return RabbitQueue(spec.dead_letter_queue, durable=True, queue_type=QueueType.QUORUM)


class _RabbitDelivery(Delivery):
    def __init__(self, message: RabbitMessage, transport: RabbitTransport, spec: QueueSpec) -> None:
        raw = message.raw_message
        self._message = message
        self._transport = transport
        self._spec = spec
        self.body = raw.body
        self.message_id = raw.message_id
        self.routing_key = raw.routing_key or ""
        self.content_type = raw.content_type
        self.content_encoding = raw.content_encoding
        headers = raw.headers or {}
        self.headers = headers
        # Our own retries carry the identity and failure history they had before; only a
        # message our own user published may speak for them.
        own = raw.user_id is not None and raw.user_id == transport.user
        original = headers.get(PRODUCER_HEADER)
        self.producer = original if own and isinstance(original, str) else raw.user_id
        attempt = headers.get(ATTEMPT_HEADER, 1) if own else 1
        self.attempt = attempt if isinstance(attempt, int) and attempt > 0 else 1
        first = headers.get(FIRST_FAILURE_HEADER) if own else None
        self.first_failed_at = _timestamp(first)

    async def ack(self) -> None:
        await self._message.ack()

    async def retry_later(self, delay_seconds: float, *, error_class: str) -> None:
        del delay_seconds  # the skeleton keeps the one fixed-TTL retry queue
        raw = self._message.raw_message
        headers: dict[str, Any] = {
            key: value for key, value in (raw.headers or {}).items() if key != "x-death"
        }
        headers[ATTEMPT_HEADER] = self.attempt + 1
        headers[ERROR_CLASS_HEADER] = error_class
        headers[FIRST_FAILURE_HEADER] = (self.first_failed_at or datetime.now(UTC)).isoformat()
        if self.producer is not None:
            headers[PRODUCER_HEADER] = self.producer
        await self._transport.broker.publish(
            self.body,
            queue=self._spec.retry_queue,
            persist=True,
            message_id=self.message_id,
            content_type=raw.content_type,
            headers=headers,
            user_id=self._transport.user,
        )
        await self._message.ack()

    async def dead_letter(self, cause: DeadLetterCause, *, error_class: str | None = None) -> None:
        del cause, error_class
        await self._message.reject(requeue=False)


class RabbitTransport(Transport):
    def __init__(
        self,
        url: str,
        *,
        prefetch: int = 16,
        retry_delay_seconds: float = 5.0,
        graceful_timeout: float = 30.0,
    ) -> None:
        self.broker = RabbitBroker(
            url,
            logger=None,
            graceful_timeout=graceful_timeout,
            default_channel=Channel(prefetch_count=prefetch, publisher_confirms=True),
        )
        self._exchange = exchange()
        self.user = unquote(urlsplit(url).username or "") or DEFAULT_AMQP_USER
        """The broker user this connection publishes as (RabbitMQ checks ``user_id``)."""
        self._retry_delay = retry_delay_seconds
        self._specs: list[QueueSpec] = []

    def subscribe(self, queue: QueueSpec, consumer: Consumer) -> None:
        self._specs.append(queue)

        async def on_message(message: RabbitMessage) -> None:
            await consumer(_RabbitDelivery(message, self, queue))

        self.broker.subscriber(service_queue(queue), ack_policy=AckPolicy.MANUAL)(on_message)

    async def declare(self) -> None:
        """Declare the exchange and every subscribed service's queues and bindings."""
        declared_exchange = await self.broker.declare_exchange(self._exchange)
        for spec in self._specs:
            await self.broker.declare_queue(dead_letter_queue(spec))
            await self.broker.declare_queue(retry_queue(spec, self._retry_delay))
            queue = await self.broker.declare_queue(service_queue(spec))
            for key in spec.binding_keys:
                await queue.bind(declared_exchange, routing_key=key)

    async def start(self) -> None:
        await self.broker.connect()
        await self.declare()
        await self.broker.start()

    async def connect(self) -> None:
        """Connect for publishing only (no consumers), declaring the exchange."""
        await self.broker.connect()
        await self.broker.declare_exchange(self._exchange)

    async def publish(self, message: OutgoingMessage) -> None:
        await self.broker.publish(
            message.body,
            exchange=self._exchange,
            routing_key=message.routing_key,
            persist=True,
            mandatory=False,
            message_id=message.message_id,
            content_type=message.content_type,
            headers=dict(message.headers) or None,
            user_id=self.user,
        )

    async def stop(self) -> None:
        await self.broker.stop()
