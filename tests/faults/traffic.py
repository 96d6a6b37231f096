"""What the suite sends and what it sees on the bus.

Shares are built from the bundled examples the way ``blume-share send`` builds them (a
fresh envelope each), alternating external links and Blume shares. Each share has an
address of its own (a recipient, or a patient imported for it alone), so every email the
SMTP server accepts names its share without trusting the Message-ID it carries.

The ``Bus`` connects to a node the suite never faults (aio-pika, publisher confirms): as
the upstream client, which publishes the requests, and as the suite's administrator, which
observes every event the system publishes (a queue bound to ``#``) and publishes poison
without a ``user_id``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, Final

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from blume_contracts.envelope import EXCHANGE
from blume_share.requests import parse_requests

OBSERVER_QUEUE: Final = "blume-chaos.observer"
PUBLISH_RETRY_SECONDS: Final = 1.0
TENANT: Final = "demo-hospital"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One AMQP message as the suite publishes it, good or hostile."""

    routing_key: str
    body: bytes
    message_id: str | None
    content_type: str | None = "application/cloudevents+json"
    content_encoding: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlannedShare:
    share_id: str
    method: str
    address: str
    """The only address this share may email (lower case)."""
    correlation_id: str
    message: Outgoing


def _example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        files("blume_share").joinpath(f"examples/{name}").read_text()
    )
    return loaded


def plan_shares(count: int, run_tag: str) -> tuple[list[PlannedShare], list[dict[str, Any]]]:
    """``count`` requests, every other one a Blume share; and the patient accounts to import."""
    link_example, blume_example = (
        _example("study-send-request.json"),
        _example("study-send-blume.json"),
    )
    shares: list[PlannedShare] = []
    patients: list[dict[str, Any]] = []
    for number in range(count):
        blume = number % 2 == 1
        data = json.loads(json.dumps(blume_example if blume else link_example))
        data["study"]["study_instance_uid"] = f"2.25.{uuid.uuid4().int}"
        data["study"]["accession_number"] = f"ACC-CHAOS-{number:05d}"
        if blume:
            patient_id, mrn = f"bp-chaos-{run_tag}-{number:05d}", f"MRN-CHAOS-{number:05d}"
            address = f"patient-{run_tag}-{number:05d}@mail.example"
            data["study"]["patient"]["mrn"] = mrn
            data["patient_account"]["blume_patient_id"] = patient_id
            patients.append(
                {
                    "blume_patient_id": patient_id,
                    "tenant_id": TENANT,
                    "mrn": mrn,
                    "email": address,
                    "locale": "en-CA",
                    "email_notifications": True,
                    "status": "active",
                    "consent": [],
                }
            )
        else:
            address = f"recipient-{run_tag}-{number:05d}@clinic.example"
            data["recipient"]["email"] = address
        (prepared,) = parse_requests(json.dumps(data))
        wire = prepared.message()
        shares.append(
            PlannedShare(
                share_id=prepared.share_id,
                method="blume" if blume else "external_link",
                address=address.lower(),
                correlation_id=prepared.event.correlationid,
                message=Outgoing(wire.routing_key, wire.body, wire.message_id, wire.content_type),
            )
        )
    return shares, patients


@dataclass(frozen=True, slots=True)
class ObservedEvent:
    source: str
    event_id: str
    type: str
    correlation_id: str | None
    share_id: str | None


class PublishRefused(Exception):
    """The broker's permissions refused the publish (a topic permission, say)."""


class Bus:
    """Publishing as an upstream client, and watching every event on ``blume.share``."""

    def __init__(self, publish_url: str, observe_url: str) -> None:
        self._publish_url = publish_url
        self._observe_url = observe_url
        self._connection: AbstractRobustConnection | None = None
        self._observer: AbstractRobustConnection | None = None
        self._channels: dict[bool, aio_pika.abc.AbstractChannel] = {}
        """Publishing channels: the upstream client's (True), the administrator's (False)."""
        self.events: list[ObservedEvent] = []
        self.unreadable = 0
        """Messages on the bus that are not a CloudEvent (the suite's own poison)."""
        self.republished = 0
        """Publishes that failed (no confirm) and were sent again with the same id."""

    async def connect(self, *, wait_for_exchange: float) -> None:
        """Connect, wait until the workers declared the exchange, bind the observer."""
        self._connection = await aio_pika.connect_robust(self._publish_url)
        self._observer = await aio_pika.connect_robust(self._observe_url)
        deadline = time.monotonic() + wait_for_exchange
        while True:  # passively: the workers (or the broker definitions) declare it
            observer = await self._observer.channel()
            try:
                await observer.get_exchange(EXCHANGE, ensure=True)
                break
            except aio_pika.exceptions.ChannelClosed:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        await observer.set_qos(prefetch_count=200)
        queue = await observer.declare_queue(
            OBSERVER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(EXCHANGE, routing_key="#")
        await queue.consume(self._observe)

    async def _observe(self, message: AbstractIncomingMessage) -> None:
        try:
            event = json.loads(message.body)
            data = event.get("data") if isinstance(event, dict) else None
            share_id = data.get("share_id") if isinstance(data, dict) else None
            self.events.append(
                ObservedEvent(
                    source=str(event["source"]),
                    event_id=str(event["id"]),
                    type=str(event["type"]),
                    correlation_id=event.get("correlationid"),
                    share_id=share_id if isinstance(share_id, str) else None,
                )
            )
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            self.unreadable += 1
        await message.ack()

    async def publish(
        self, message: Outgoing, *, upstream: bool = True, give_up_after: float = 600.0
    ) -> None:
        """Publish persistently and wait for the confirm; on failure, again (same id).

        ``upstream``: as the upstream client (requests); otherwise as the suite's
        administrator without a ``user_id`` (poison: a publisher nothing vouches for). A
        publish the broker's permissions refuse raises ``PublishRefused`` at once.
        """
        deadline = time.monotonic() + give_up_after
        while True:
            try:
                channel = await self._channel(upstream)
                exchange = await channel.get_exchange(EXCHANGE, ensure=False)
                await exchange.publish(
                    aio_pika.Message(
                        message.body,
                        message_id=message.message_id,
                        content_type=message.content_type,
                        content_encoding=message.content_encoding,
                        headers=dict(message.headers) or None,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=message.routing_key,
                    timeout=30,
                )
                return
            except aiormq.exceptions.ChannelAccessRefused as error:
                self._channels.pop(upstream, None)
                raise PublishRefused(message.routing_key) from error
            except (aio_pika.exceptions.AMQPError, TimeoutError, ConnectionError) as error:
                if time.monotonic() > deadline:
                    raise
                self.republished += 1
                print(f"  publish not confirmed ({type(error).__name__}); sending again")
                self._channels.pop(upstream, None)
                await asyncio.sleep(PUBLISH_RETRY_SECONDS)

    async def _channel(self, upstream: bool) -> aio_pika.abc.AbstractChannel:
        channel = self._channels.get(upstream)
        if channel is None or channel.is_closed:
            connection = self._connection if upstream else self._observer
            assert connection is not None
            channel = self._channels[upstream] = await connection.channel(publisher_confirms=True)
        return channel

    async def close(self) -> None:
        for connection in (self._connection, self._observer):
            if connection is not None:
                await connection.close()


class Driver:
    """Publishes the planned shares one after another at a rate the fault plan sets."""

    def __init__(self, bus: Bus, shares: list[PlannedShare], rate: float) -> None:
        self._bus = bus
        self._shares = shares
        self.rate = rate
        self.published = 0

    @property
    def remaining(self) -> int:
        return len(self._shares) - self.published

    async def run(self) -> None:
        next_at = time.monotonic()
        for share in self._shares:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await self._bus.publish(share.message)
            self.published += 1
            next_at = max(next_at + 1 / self.rate, time.monotonic() - 1.0)
