"""The production transport: FastStream's RabbitBroker over RabbitMQ.

Topology (declared idempotently at start): the durable topic exchange ``blume.share``; per
service a quorum queue bound by its event types, dead-lettering to its own quorum DLQ, and a
quorum retry queue whose TTL sends messages back to the service queue after a delay.
Publishing waits for the broker's confirm; consumers ack only after the work is committed.
"""

from __future__ import annotations

from typing import Any

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

from blume_runtime.topology import DELIVERY_LIMIT, QueueSpec
from blume_runtime.transport import (
    ATTEMPT_HEADER,
    Consumer,
    DeadLetterCause,
    Delivery,
    OutgoingMessage,
    Transport,
)


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
        headers = raw.headers or {}
        attempt = headers.get(ATTEMPT_HEADER, 1)
        self.attempt = attempt if isinstance(attempt, int) else 1

    async def ack(self) -> None:
        await self._message.ack()

    async def retry_later(self, delay_seconds: float, *, error_class: str) -> None:
        del delay_seconds, error_class  # the skeleton keeps the one fixed-TTL retry queue
        raw = self._message.raw_message
        headers: dict[str, Any] = {
            key: value for key, value in (raw.headers or {}).items() if key != "x-death"
        }
        headers[ATTEMPT_HEADER] = self.attempt + 1
        await self._transport.broker.publish(
            self.body,
            queue=self._spec.retry_queue,
            persist=True,
            message_id=self.message_id,
            content_type=raw.content_type,
            headers=headers,
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
        )

    async def stop(self) -> None:
        await self.broker.stop()
