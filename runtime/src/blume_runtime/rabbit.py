"""The production transport: aio-pika on RabbitMQ, with raw deliveries and self-healing consumers.

One robust connection (``connect_robust``: it reconnects and reopens its channels), one
channel per consumer with the prefetch, and one publishing channel with publisher confirms
(a mandatory publish nobody routes raises). Consumers are registered on the underlying
aiormq channel, so our code receives every delivery's body bytes and AMQP properties with
nothing decoded on the way, and ``deliver`` settles each exactly once.

Settling: ``ack`` (acks finishing together go as one frame where that is exact:
``blume_runtime.acks``); ``retry_later`` republishes to the service's delay tier through its
private exchange and acks once the broker confirmed it; ``dead_letter`` does the same to the
DLQ. Republished messages carry ``user_id`` (every publish does: RabbitMQ checks it against
the connection's user) and the ``x-blume-*`` headers of ``wire``.

Over 400 lines on purpose: it is one adapter (connection, topology, consumers and their
watchdog, confirmed publishing, settling), whose parts share one connection's state.

A watchdog looks every ``watchdog_seconds`` for queues without a live consumer of this
process (the broker cancelled it because the queue was deleted, or its channel or the
connection closed), redeclares the topology and consumes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, cast

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from blume_contracts.envelope import EXCHANGE

from blume_runtime import amqp_decoding, wire
from blume_runtime.acks import ChannelAcks
from blume_runtime.broker_users import BrokerUsers, amqp_user
from blume_runtime.lifecycle import cancel_and_wait
from blume_runtime.topology import (
    DEAD_KEY,
    QueueSpec,
    declare,
    declare_shared_exchange,
    delay_key,
    delay_queue_name,
    delay_tiers,
    tier_for,
)
from blume_runtime.transport import (
    Consumer,
    DeadLetterCause,
    Delivery,
    DeliverySettledError,
    OutgoingMessage,
    Transport,
    deliver,
)

log = structlog.get_logger("transport")

_LONGEST_DELAY: Final = timedelta(days=30).total_seconds()
"""A retry delay beyond this (or not a number) is a caller's bug: it is held to this."""


def republishable(
    message: DeliveredMessage, headers: dict[str, Any], user: str
) -> aio_pika.Message:
    """The same message as ``user``'s to republish: persistent, new headers, no expiration
    (a publisher's TTL must not expire it in a delay queue or a DLQ)."""
    properties = message.header.properties
    stamped = properties.timestamp
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        message_id=properties.message_id,
        timestamp=stamped if isinstance(stamped, datetime) else None,
        type=properties.message_type,
        app_id=properties.app_id,
        user_id=user,
    )


class _ConsumerSlot:
    """One subscribed queue and what we know of our consumer on it."""

    def __init__(self, spec: QueueSpec, consumer: Consumer) -> None:
        self.spec = spec
        self.consumer = consumer
        self.channel: AbstractRobustChannel | None = None
        self.underlay: aiormq.Channel | None = None
        self.tag: str | None = None
        self.lost_since: float | None = None

    @property
    def attached(self) -> bool:
        """Our consumer tag is registered on an open channel (the broker's cancel removes it)."""
        underlay = self.underlay
        return (
            underlay is not None
            and not underlay.is_closed
            and self.tag is not None
            and self.tag in underlay.consumers
        )


class _RabbitDelivery(Delivery):
    def __init__(
        self,
        message: DeliveredMessage,
        transport: RabbitTransport,
        spec: QueueSpec,
        acks: ChannelAcks,
    ) -> None:
        properties = message.header.properties
        self._message = message
        self._acks = acks
        self._transport = transport
        self._spec = spec
        self._facts = wire.read_facts(
            properties.user_id,
            properties.headers,
            message.routing_key or "",
            trusted_users=transport.users.trusted_for(spec.service),
        )
        self.body = message.body
        self.message_id = properties.message_id
        self.routing_key = self._facts.event_type
        self.content_type = properties.content_type
        self.content_encoding = properties.content_encoding
        self.headers = dict(properties.headers or {})
        self.producer = self._facts.producer
        self.attempt = self._facts.attempt
        self.first_failed_at = self._facts.first_failed_at

    def _copy(self, headers: dict[str, Any]) -> aio_pika.Message:
        return republishable(self._message, headers, self._transport.users.connection_user)

    async def _settle(self, private_key: str | None, headers: dict[str, Any]) -> None:
        if self.settled:
            raise DeliverySettledError(f"message {self.message_id} was already settled")
        try:
            if private_key is not None:
                await self._transport.publish_private(self._spec, private_key, self._copy(headers))
            await self._acks.ack(cast(int, self._message.delivery_tag))
        except Exception as error:
            self.settle_error = error
            raise
        self.settled = True

    def _carried(self, attempt: int, error_class: str | None) -> dict[str, Any]:
        return wire.carried_headers(
            self._facts,
            self._message.header.properties.headers,
            now=datetime.now(UTC),
            attempt=attempt,
            error_class=error_class,
        )

    async def ack(self) -> None:
        await self._settle(None, {})

    async def retry_later(self, delay_seconds: float, *, error_class: str) -> None:
        delay = delay_seconds if math.isfinite(delay_seconds) else _LONGEST_DELAY
        delay = min(max(delay, 0.0), _LONGEST_DELAY)
        tier = tier_for(delay, self._transport.tiers)
        headers = self._carried(self.attempt + 1, error_class)
        if delay > self._transport.tiers[-1]:  # beyond the longest tier: it waits in several
            headers[wire.DUE_AT] = wire.iso(datetime.now(UTC) + timedelta(seconds=delay))
        await self._settle(delay_key(tier), headers)

    async def dead_letter(self, cause: DeadLetterCause, *, error_class: str | None = None) -> None:
        headers = self._carried(self.attempt, error_class)
        headers[wire.DEAD_LETTER_CAUSE] = cause.value
        headers[wire.SERVICE] = self._spec.service
        await self._settle(DEAD_KEY, headers)

    async def wait_longer(self) -> bool:
        """Send a retry that came back from the longest tier before it was due to wait again."""
        due = self._facts.due_at
        remaining = (due - datetime.now(UTC)).total_seconds() if due is not None else 0.0
        if remaining <= 0:
            return False
        headers = wire.foreign_headers(self._message.header.properties.headers)
        headers.update(
            (key, value)
            for key, value in self.headers.items()
            if key in wire.OURS - {wire.X_DEATH, wire.DELIVERY_COUNT}
        )
        await self._settle(delay_key(tier_for(remaining, self._transport.tiers)), headers)
        return True

    async def release(self) -> None:
        channel = self._message.channel
        tag = cast(int, self._message.delivery_tag)
        if not channel.is_closed:  # a closed channel has given it back already
            with contextlib.suppress(Exception):
                await channel.basic_nack(tag, requeue=True)
                self._acks.settled_otherwise(tag)


class RabbitTransport(Transport):
    def __init__(
        self,
        url: str,
        *,
        users: BrokerUsers | None = None,
        prefetch: int = 16,
        max_delay_seconds: float = 300.0,
        watchdog_seconds: float = 5.0,
        graceful_timeout: float = 30.0,
        publish_timeout: float = 30.0,
        name: str = "blume-share",
    ) -> None:
        amqp_decoding.install()
        self._url = url
        self.users = users or BrokerUsers(amqp_user(url))
        self.tiers = delay_tiers(max_delay_seconds)
        self._prefetch = prefetch
        self._watchdog_seconds = watchdog_seconds
        self._graceful_timeout = graceful_timeout
        self._publish_timeout = publish_timeout
        self._name = name
        self._slots: list[_ConsumerSlot] = []
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._probe_channel: AbstractRobustChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._warned: set[str] = set()
        self._topology_stale = False
        self._watchdog: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._acks: weakref.WeakKeyDictionary[aiormq.abc.AbstractChannel, ChannelAcks] = (
            weakref.WeakKeyDictionary()
        )
        """Per consuming channel (a reopened one is another): its acks, coalesced."""

    def subscribe(self, queue: QueueSpec, consumer: Consumer) -> None:
        self._slots.append(_ConsumerSlot(queue, consumer))

    async def _connect(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self._url,
            client_properties={"connection_name": self._name},
            reconnect_interval=self._watchdog_seconds,
        )
        self._publisher = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )

    async def start(self) -> None:
        await self._connect()
        await declare(self._url, [slot.spec for slot in self._slots], self.tiers, self._warned)
        for slot in self._slots:
            await self._attach(slot)
        self._watchdog = asyncio.create_task(self._watch())

    async def connect(self) -> None:
        """Connect for publishing only (no consumers), declaring the exchange."""
        await self._connect()
        await declare_shared_exchange(self._url)

    async def _publish(
        self, exchange: str, routing_key: str, message: aio_pika.Message, *, mandatory: bool
    ) -> None:
        if self._publisher is None:
            raise ConnectionError("the transport is not connected")
        if exchange not in self._exchanges:
            self._exchanges[exchange] = await self._publisher.get_exchange(exchange, ensure=False)
        await asyncio.wait_for(
            self._exchanges[exchange].publish(message, routing_key, mandatory=mandatory),
            self._publish_timeout,
        )

    async def publish(self, message: OutgoingMessage) -> None:
        outgoing = aio_pika.Message(
            message.body,
            headers=message.headers or None,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            message_id=message.message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            user_id=self.users.connection_user,
        )
        await self._publish(EXCHANGE, message.routing_key, outgoing, mandatory=False)

    async def publish_private(self, spec: QueueSpec, key: str, message: aio_pika.Message) -> None:
        """To one of the service's own queues; unroutable (a queue was deleted) raises."""
        try:
            await self._publish(spec.private_exchange, key, message, mandatory=True)
        except (aio_pika.exceptions.PublishError, aio_pika.exceptions.ChannelNotFoundEntity):
            self._topology_stale = True  # the watchdog redeclares what is missing
            raise

    async def _attach(self, slot: _ConsumerSlot) -> None:
        if self._connection is None:
            raise ConnectionError("the transport is not connected")
        if slot.channel is None:
            slot.channel = await self._connection.channel(publisher_confirms=False)
            await slot.channel.set_qos(prefetch_count=self._prefetch)
        underlay = cast(aiormq.Channel, await slot.channel.get_underlay_channel())
        consuming = await underlay.basic_consume(
            slot.spec.name, partial(self._on_delivery, slot), no_ack=False
        )
        slot.underlay, slot.tag, slot.lost_since = underlay, consuming.consumer_tag, None

    async def _on_delivery(self, slot: _ConsumerSlot, message: DeliveredMessage) -> None:
        acks = self._acks.get(message.channel)
        if acks is None:
            acks = self._acks[message.channel] = ChannelAcks(message.channel)
        acks.delivered(cast(int, message.delivery_tag))  # first: see ``blume_runtime.acks``
        self._in_flight += 1
        self._drained.clear()
        try:
            await self._handle(slot, message, acks)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._drained.set()

    async def _handle(
        self, slot: _ConsumerSlot, message: DeliveredMessage, acks: ChannelAcks
    ) -> None:
        context = {"service": slot.spec.service, "queue": slot.spec.name}
        try:
            delivery = _RabbitDelivery(message, self, slot.spec, acks)
        except Exception as error:  # noqa: BLE001 - no delivery to settle: the broker takes it
            log.error("delivery rejected", error_type=type(error).__name__, **context)
            tag = cast(int, message.delivery_tag)
            with contextlib.suppress(Exception):
                await message.channel.basic_reject(tag, requeue=False)
                acks.settled_otherwise(tag)
            return
        try:
            if await delivery.wait_longer():
                return
        except Exception as error:  # noqa: BLE001 - the broker could not take it back yet
            log.warning(
                "a retry could not wait longer; the broker will redeliver it",
                error_type=type(error).__name__,
                **context,
            )
            await delivery.release()
            return
        await deliver(slot.consumer, delivery, service=slot.spec.service)

    @property
    def ack_frames_sent(self) -> int:
        """Ack frames sent on the consuming channels open now (fewer than acks when
        coalesced); for tests and benchmarks."""
        return sum(acks.frames for acks in self._acks.values())

    def consumer_states(self) -> dict[str, bool]:
        now = time.monotonic()
        states = {}
        for slot in self._slots:
            attached = slot.attached
            if attached:
                slot.lost_since = None
            elif slot.lost_since is None:
                slot.lost_since = now
                log.warning("consumer lost", queue=slot.spec.name, service=slot.spec.service)
            states[slot.spec.name] = attached
        return states

    def consumers_lost_since(self) -> float | None:
        self.consumer_states()
        lost = [slot.lost_since for slot in self._slots if slot.lost_since is not None]
        return min(lost) if lost else None

    async def queue_depth(self, queue: str) -> int | None:
        """Ready messages, by a passive declare on a channel of its own (a missing queue
        closes only that channel, which is opened again on the next call)."""
        if self._connection is None:
            return None
        if self._probe_channel is None or self._probe_channel.is_closed:
            self._probe_channel = await self._connection.channel(publisher_confirms=False)
        declared = await asyncio.wait_for(
            self._probe_channel.declare_queue(queue, passive=True), self._publish_timeout
        )
        return declared.declaration_result.message_count

    async def retry_depth(self, queue: str) -> int | None:
        """Messages waiting in the queue's delay tiers (each asked as ``queue_depth``)."""
        depths = await asyncio.gather(
            *(self.queue_depth(delay_queue_name(queue, tier)) for tier in self.tiers)
        )
        return None if any(depth is None for depth in depths) else sum(filter(None, depths))

    async def heal(self) -> None:
        """Redeclare and consume again wherever this process has lost its consumer."""
        self.consumer_states()
        lost = [slot for slot in self._slots if not slot.attached]
        if not lost and not self._topology_stale:
            return
        redeclared = self._slots if self._topology_stale else lost
        await asyncio.wait_for(
            declare(self._url, [slot.spec for slot in redeclared], self.tiers, self._warned),
            self._publish_timeout,
        )
        self._topology_stale = False
        for slot in lost:
            await asyncio.wait_for(self._attach(slot), self._publish_timeout)
            log.info("consumer re-attached", queue=slot.spec.name, service=slot.spec.service)

    async def _watch(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._watchdog_seconds)
            try:
                await self.heal()
            except Exception as error:  # noqa: BLE001 - tried again on the next tick
                (log.debug if failing else log.warning)(
                    "re-attaching consumers failed; retrying", error_type=type(error).__name__
                )
                failing = True
            else:
                failing = False

    async def stop(self) -> None:
        await cancel_and_wait(self._watchdog)
        self._watchdog = None
        for slot in self._slots:
            if slot.attached and slot.underlay is not None and slot.tag is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(slot.underlay.basic_cancel(slot.tag), 5)
        if self._in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self._graceful_timeout)
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
            self._publisher = None
            self._probe_channel = None
            self._exchanges.clear()
