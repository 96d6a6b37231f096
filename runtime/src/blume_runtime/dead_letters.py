"""Inspecting, replaying and purging the per-service dead-letter queues (ops tooling, RabbitMQ).

Bodies are never shown (they may hold PHI): per message, its id, original event type, cause,
error class, attempts, failure times and verified producer.

Reading a quorum-queue message and handing it back would move it and raise its delivery
count. So every command walks the queue once, head to tail, as deep as it was when the
command started, and decides for each message: *keep* it (republish it to the tail of the
same DLQ, confirmed, then ack the original: after the whole walk the kept messages are in
their old order), *replay* it (republish it to its service queue through the service's
private exchange, confirmed) or *purge* it. Replayed and purged originals are acked only
once an audit event naming them (who, what, when) has been confirmed by the broker, one
event per batch. A walk that dies half-way can duplicate a message, never lose one: the
unacked originals go back to the DLQ, and consumers dedupe by event id.

Republished messages are the ops user's; they carry the verified producer the owning
service would have read from the original (``wire.read_facts``), so a replay keeps the
identity a message was dead-lettered with and never upgrades it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal, cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage
from blume_contracts.envelope import CONTENT_TYPE, EXCHANGE, CloudEvent
from blume_contracts.events import (
    MAX_DEAD_LETTERS_PER_EVENT,
    DeadLetterSelection,
    DeadLettersHandled,
    DeadLettersPurged,
    DeadLettersReplayed,
)
from blume_contracts.registry import OPS
from blume_contracts.serialisation import event_body
from pamqp import commands

from blume_runtime import amqp_decoding, wire
from blume_runtime.broker_users import BrokerUsers
from blume_runtime.rabbit import republishable
from blume_runtime.topology import DEAD_KEY, REPLAY_KEY, QueueSpec
from blume_runtime.transport import DeadLetterCause

OPS_TENANT: Final = "_ops"
"""The audit chain of operator actions (no tenant id starts with an underscore)."""
OPS_SOURCE: Final = "/blume-share/ops"
_BROKER_REASONS: Final = {"delivery_limit": DeadLetterCause.DELIVERY_LIMIT.value}
"""The broker's own dead-lettering reasons we have a cause for; others show as the broker
names them (``rejected`` by an earlier release, ``expired`` by a publisher's TTL)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message_id: str | None
    event_type: str
    cause: str
    error_class: str | None
    attempts: int
    first_failed_at: datetime | None
    last_failed_at: datetime | None
    producer: str | None
    """The verified producer it was dead-lettered with (None: no validated publisher)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "event_type": self.event_type,
            "cause": self.cause,
            "error_class": self.error_class,
            "attempts": self.attempts,
            "first_failed_at": wire.iso(self.first_failed_at) if self.first_failed_at else None,
            "last_failed_at": wire.iso(self.last_failed_at) if self.last_failed_at else None,
            "producer": self.producer,
        }


@dataclass(frozen=True, slots=True)
class DeadLetterQueue:
    service: str
    depth: int
    letters: list[DeadLetter]


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a replay or purge takes: by message id, by event type, or all."""

    by: Literal["id", "type", "all"]
    values: tuple[str, ...] = ()
    limit: int | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.by == "id":
            return letter.message_id in self.values
        if self.by == "type":
            return letter.event_type in self.values
        return True

    def contract(self) -> DeadLetterSelection:
        return DeadLetterSelection(by=self.by, values=list(self.values), limit=self.limit)


@dataclass(frozen=True, slots=True)
class Operator:
    """Who runs the command: the OS account always, ``BLUME_OPERATOR`` as self-asserted."""

    os_user: str
    asserted: str | None
    host: str


@dataclass(slots=True)
class Outcome:
    """What a replay or purge did."""

    service: str
    moved: list[DeadLetter] = field(default_factory=list)
    audit_events: list[str] = field(default_factory=list)
    """The ids of the audit events published, one per batch."""


class Action(StrEnum):
    KEEP = "keep"
    REPLAY = "replay"
    PURGE = "purge"


def describe(message: DeliveredMessage, service: str, users: BrokerUsers) -> DeadLetter:
    """What a DLQ message says about itself, read as its owning service would read it."""
    properties = message.header.properties
    facts = wire.read_facts(
        properties.user_id,
        properties.headers,
        message.routing_key or "",
        trusted_users=users.trusted_for(service),
    )
    death = wire.broker_death(properties.headers)
    died_at = death.time
    reason = death.reason or ""
    cause = facts.dead_letter_cause or _BROKER_REASONS.get(reason, reason) or "unknown"
    return DeadLetter(
        message_id=properties.message_id,
        event_type=facts.event_type if facts.trusted else (death.routing_key or facts.event_type),
        cause=cause,
        error_class=facts.error_class,
        attempts=facts.attempt,
        first_failed_at=facts.first_failed_at or died_at,
        last_failed_at=facts.last_failed_at or died_at,
        producer=facts.producer,
    )


def _republished(
    message: DeliveredMessage, letter: DeadLetter, users: BrokerUsers, *, keep_history: bool
) -> aio_pika.Message:
    """The message again, as the ops user's, with what its service must believe about it.

    Kept in the DLQ, it keeps its history; replayed, it starts a fresh retry budget.
    """
    properties = message.header.properties
    headers = wire.foreign_headers(properties.headers)
    headers[wire.PRODUCER] = letter.producer or ""
    headers[wire.EVENT_TYPE] = letter.event_type
    if keep_history:
        headers[wire.ATTEMPT] = letter.attempts
        headers[wire.DEAD_LETTER_CAUSE] = letter.cause
        for name, moment in (
            (wire.FIRST_FAILURE_AT, letter.first_failed_at),
            (wire.LAST_FAILURE_AT, letter.last_failed_at),
        ):
            if moment is not None:
                headers[name] = wire.iso(moment)
        if letter.error_class:
            headers[wire.ERROR_CLASS] = letter.error_class
    return republishable(message, headers, users.connection_user)


class _DeadLetterQueue:
    """One service's DLQ on an open connection: its depth, and a walk from head to tail."""

    def __init__(self, connection: AbstractConnection, spec: QueueSpec, users: BrokerUsers):
        self._connection = connection
        self._spec = spec
        self._users = users
        self._channel: AbstractChannel | None = None

    async def depth(self) -> int | None:
        """How many messages wait (None: the queue does not exist, the service never ran)."""
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            queue = await channel.declare_queue(self._spec.dead_letter_queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return None
        self._channel = channel
        return queue.declaration_result.message_count or 0

    async def _publish(self, exchange: str, key: str, message: aio_pika.Message) -> None:
        assert self._channel is not None
        target = await self._channel.get_exchange(exchange, ensure=False)
        await target.publish(message, key, mandatory=True)

    async def walk(
        self,
        depth: int,
        decide: Callable[[DeadLetter], Action],
        settle_batch: Callable[[list[DeadLetter]], Any],
    ) -> list[DeadLetter]:
        """Visit ``depth`` messages; return every letter seen, in queue order."""
        assert self._channel is not None
        underlay = cast(aiormq.Channel, await self._channel.get_underlay_channel())
        seen: list[DeadLetter] = []
        held: list[tuple[int, DeadLetter]] = []
        for _ in range(depth):
            message = await underlay.basic_get(self._spec.dead_letter_queue, no_ack=False)
            if not isinstance(message.delivery, commands.Basic.GetOk):
                break  # someone else emptied it meanwhile
            tag = cast(int, message.delivery_tag)
            letter = describe(message, self._spec.service, self._users)
            seen.append(letter)
            action = decide(letter)
            if action is Action.KEEP:
                await self._publish(
                    self._spec.private_exchange,
                    DEAD_KEY,
                    _republished(message, letter, self._users, keep_history=True),
                )
                await underlay.basic_ack(tag)
                continue
            if action is Action.REPLAY:
                await self._publish(
                    self._spec.private_exchange,
                    REPLAY_KEY,
                    _republished(message, letter, self._users, keep_history=False),
                )
            held.append((tag, letter))
            if len(held) == MAX_DEAD_LETTERS_PER_EVENT:
                await self._settle(underlay, held, settle_batch)
        if held:
            await self._settle(underlay, held, settle_batch)
        return seen

    async def _settle(
        self,
        underlay: aiormq.Channel,
        held: list[tuple[int, DeadLetter]],
        settle_batch: Callable[[list[DeadLetter]], Any],
    ) -> None:
        await settle_batch([letter for _tag, letter in held])
        for tag, _letter in held:
            await underlay.basic_ack(tag)
        held.clear()

    async def publish_event(self, event: CloudEvent[Any]) -> None:
        """An audit event on ``blume.share``; unroutable (no audit sink bound) raises."""
        await self._publish(
            EXCHANGE,
            event.type,
            aio_pika.Message(
                event_body(event),
                content_type=CONTENT_TYPE,
                message_id=event.id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                user_id=self._users.connection_user,
            ),
        )


async def _connect(url: str) -> AbstractConnection:
    amqp_decoding.install()
    return await aio_pika.connect(url, client_properties={"connection_name": "blume-share dlq"})


async def list_dead_letters(
    url: str, services: Sequence[str], show: int, users: BrokerUsers
) -> list[DeadLetterQueue]:
    """Each service's DLQ depth and, with ``show``, its first messages (walking it if so)."""
    queues = []
    async with await _connect(url) as connection:
        for service in services:
            dlq = _DeadLetterQueue(connection, QueueSpec(service, ()), users)
            depth = await dlq.depth()
            if depth is None:
                continue
            letters = (
                await dlq.walk(depth, lambda _letter: Action.KEEP, _nothing_to_audit)
                if show and depth
                else []
            )
            queues.append(DeadLetterQueue(service, depth, letters[:show]))
    return queues


async def _nothing_to_audit(_batch: list[DeadLetter]) -> None:
    raise AssertionError("a walk that keeps everything has nothing to settle")


_AUDITED: Final[dict[Action, tuple[str, type[DeadLettersHandled]]]] = {
    Action.REPLAY: ("ops.dead_letters.replayed", DeadLettersReplayed),
    Action.PURGE: ("ops.dead_letters.purged", DeadLettersPurged),
}


class NotOpsUserError(RuntimeError):
    """Replays and purges run as the ops user: only its republishes does a service believe."""


async def act(
    url: str,
    service: str,
    action: Literal[Action.REPLAY, Action.PURGE],
    selection: Selection,
    operator: Operator,
    users: BrokerUsers,
) -> Outcome:
    """Replay or purge the selected dead letters of ``service``; audit every batch."""
    if users.user_of(OPS) != users.connection_user:
        raise NotOpsUserError(
            f"dead letters are replayed and purged as the ops broker user "
            f"({users.user_of(OPS)!r}); BLUME_AMQP_URL connects as {users.connection_user!r}"
        )
    outcome = Outcome(service)
    kind = DeadLettersReplayed if action is Action.REPLAY else DeadLettersPurged
    event_type = (
        "ops.dead_letters.replayed" if action is Action.REPLAY else "ops.dead_letters.purged"
    )
    correlation = str(uuid.uuid4())

    def decide(letter: DeadLetter) -> Action:
        taken = len(outcome.moved)
        if (selection.limit is None or taken < selection.limit) and selection.matches(letter):
            outcome.moved.append(letter)
            return action
        return Action.KEEP

    async with await _connect(url) as connection:
        dlq = _DeadLetterQueue(connection, QueueSpec(service, ()), users)
        depth = await dlq.depth()
        if not depth:
            return outcome

        async def audit(batch: list[DeadLetter]) -> None:
            event = CloudEvent[DeadLettersHandled](
                id=str(uuid.uuid4()),
                source=OPS_SOURCE,
                type=event_type,
                time=datetime.now(UTC),
                tenantid=OPS_TENANT,
                correlationid=correlation,
                data=kind(
                    service=service,
                    requested_by=operator.os_user,
                    asserted_operator=operator.asserted,
                    host=operator.host,
                    broker_user=users.connection_user,
                    selection=selection.contract(),
                    message_ids=[letter.message_id for letter in batch],
                    event_types=sorted({letter.event_type for letter in batch}),
                    count=len(batch),
                    performed_at=datetime.now(UTC),
                ),
            )
            await dlq.publish_event(event)
            outcome.audit_events.append(event.id)

        await dlq.walk(depth, decide, audit)
    return outcome
