"""Dead-letter queues on a real broker: described without bodies, replayed, purged, audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from blume_contracts.envelope import CloudEvent, now
from blume_contracts.events import ShareAccepted
from blume_runtime import wire
from blume_runtime.app import Runtime
from blume_runtime.broker_users import BrokerUsers
from blume_runtime.dead_letters import Action, Operator, Selection, act, list_dead_letters
from blume_runtime.service import HandlerContext, Service
from blume_runtime.settings import Settings
from blume_runtime.topology import DEAD_KEY, QueueSpec
from blume_runtime.transport import DeadLetterCause, Delivery, OutgoingMessage

from runtime.tests.db_support import NO_AUDIT_STORE, runtime_database
from runtime.tests.rabbit_support import (
    audit_observer,
    consuming,
    depth,
    until,
    until_depth,
)

pytestmark = pytest.mark.integration

SPEC = QueueSpec("probe", ("share.accepted", "share.link.issued", "study.send.requested"))
GUEST = BrokerUsers("guest")
OPERATOR = Operator(os_user="alice", asserted="Alice (on call)", host="ops-host")
SECRET = b'{"patient": "DOE^JANE"}'


class Poisoner:
    """Settles deliveries so that they end in the DLQ in known ways, until told to ack."""

    def __init__(self) -> None:
        self.acking = False

    async def __call__(self, delivery: Delivery) -> None:
        if self.acking:
            await delivery.ack()
        elif delivery.routing_key == "share.link.issued" and delivery.attempt == 1:
            await delivery.retry_later(1, error_class="smtp_unavailable")
        elif delivery.routing_key == "share.link.issued":
            await delivery.dead_letter(DeadLetterCause.EXHAUSTED, error_class="smtp_unavailable")
        else:
            await delivery.dead_letter(DeadLetterCause.CONTRACT, error_class="contract")


async def broker_gives_up(amqp_url: str, message_id: str) -> None:
    """A consumer that dies on the message every time: the queue's delivery limit ends it."""
    before = await depth(amqp_url, SPEC.dead_letter_queue)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("blume.share")
        await exchange.publish(aio_pika.Message(SECRET, message_id=message_id), "share.accepted")
        queue = await channel.get_queue(SPEC.name)

        async def crash(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.nack(requeue=True)

        tag = await queue.consume(crash)
        await until_depth(amqp_url, SPEC.dead_letter_queue, before + 1, within=30)
        await queue.cancel(tag)


@pytest.fixture
async def dead(amqp_url: str) -> Poisoner:
    """In the probe DLQ, in order: a contract breach, two exhausted retries, a delivery
    limit. The poisoner is returned acking, to consume what is replayed."""
    poisoner = Poisoner()
    async with consuming(amqp_url, SPEC, poisoner, max_delay_seconds=2) as (transport, seen):
        await transport.publish(OutgoingMessage("study.send.requested", SECRET, "contract-1"))
        await seen.wait_for(1)
        for expected, name in ((3, "smtp-1"), (5, "smtp-2")):  # each is tried twice
            await transport.publish(OutgoingMessage("share.link.issued", SECRET, name))
            await seen.wait_for(expected)
    await broker_gives_up(amqp_url, "limit-1")
    poisoner.acking = True
    return poisoner


async def drain_dlq(amqp_url: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(SPEC.dead_letter_queue)
        taken = []
        while (found := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(found)
        return taken


async def test_list_describes_each_dead_letter_and_leaves_the_queue_as_it_was(
    amqp_url: str, dead: Poisoner
) -> None:
    """Per message: id, original type, cause, error class, attempts, failure times and
    producer, never the body; listing twice gives the same answer, and afterwards the queue
    holds the same messages in the same order with no redelivery counted."""
    [first] = await list_dead_letters(amqp_url, ["probe", "never-ran"], 10, GUEST)
    [again] = await list_dead_letters(amqp_url, ["probe"], 10, GUEST)
    assert first == again
    assert first.depth == 4
    described = [
        (letter.message_id, letter.event_type, letter.cause, letter.error_class, letter.attempts)
        for letter in first.letters
    ]
    assert described == [
        ("contract-1", "study.send.requested", "contract", "contract", 1),
        ("smtp-1", "share.link.issued", "exhausted", "smtp_unavailable", 2),
        ("smtp-2", "share.link.issued", "exhausted", "smtp_unavailable", 2),
        ("limit-1", "share.accepted", "delivery_limit", None, 1),
    ]
    smtp, limit = first.letters[1], first.letters[3]
    assert smtp.first_failed_at is not None
    assert smtp.last_failed_at is not None
    assert smtp.first_failed_at < smtp.last_failed_at
    assert limit.last_failed_at is not None
    # limit-1 was published without a user_id: it has no verified producer, and keeps none
    assert [letter.producer for letter in first.letters] == ["guest", "guest", "guest", None]
    assert "DOE^JANE" not in json.dumps([letter.as_json() for letter in first.letters])
    [counted] = await list_dead_letters(amqp_url, ["probe"], 0, GUEST)
    assert (counted.depth, counted.letters) == (4, [])
    left = await drain_dlq(amqp_url)
    assert [m.message_id for m in left] == ["contract-1", "smtp-1", "smtp-2", "limit-1"]
    assert {m.body for m in left} == {SECRET}
    assert {m.headers.get("x-delivery-count", 0) for m in left} == {0}, "never redelivered"


def events_of(audited: list[dict[str, Any]]) -> list[tuple[str, list[str | None], int]]:
    return [
        (event["type"], event["data"]["message_ids"], event["data"]["count"]) for event in audited
    ]


async def test_replay_and_purge_by_id_type_or_all_are_audited(
    amqp_url: str, dead: Poisoner
) -> None:
    """Replay by id and by type (with a limit), purge by id and all: each moves exactly
    what it selects, keeps the rest in order, and publishes an audit event naming who,
    what and when. A replay comes back with a fresh budget and its producer."""

    async def run(action: Action, selection: Selection) -> list[str | None]:
        outcome = await act(amqp_url, "probe", action, selection, OPERATOR, GUEST)
        return [letter.message_id for letter in outcome.moved]

    async with (
        audit_observer(amqp_url) as audited,
        consuming(amqp_url, SPEC, dead) as (_transport, replayed),
    ):
        assert await run(Action.REPLAY, Selection("id", ("limit-1",))) == ["limit-1"]
        by_type = Selection("type", ("share.link.issued",), limit=1)
        assert await run(Action.REPLAY, by_type) == ["smtp-1"]
        assert await run(Action.PURGE, Selection("id", ("contract-1",))) == ["contract-1"]
        [left] = await list_dead_letters(amqp_url, ["probe"], 10, GUEST)
        assert await run(Action.PURGE, Selection("all")) == ["smtp-2"]
        back = await replayed.wait_for(2)
        events = await audited()
    assert [letter.message_id for letter in left.letters] == ["smtp-2"]
    assert [(d.message_id, d.attempt, d.producer, d.routing_key) for d in back] == [
        ("limit-1", 1, None, "share.accepted"),  # a replay never upgrades an identity
        ("smtp-1", 1, "guest", "share.link.issued"),
    ]
    assert events_of(events) == [
        ("ops.dead_letters.replayed", ["limit-1"], 1),
        ("ops.dead_letters.replayed", ["smtp-1"], 1),
        ("ops.dead_letters.purged", ["contract-1"], 1),
        ("ops.dead_letters.purged", ["smtp-2"], 1),
    ]
    for event in events:
        assert (event["tenantid"], event["source"]) == ("_ops", "/blume-share/ops")
        data = event["data"]
        assert (data["requested_by"], data["asserted_operator"], data["host"]) == (
            "alice",
            "Alice (on call)",
            "ops-host",
        )
        assert data["service"] == "probe"
    assert events[1]["data"]["selection"] == {
        "by": "type",
        "values": ["share.link.issued"],
        "limit": 1,
    }
    assert events[1]["data"]["event_types"] == ["share.link.issued"]
    assert await depth(amqp_url, SPEC.dead_letter_queue) == 0


async def test_a_replayed_message_is_deduplicated_by_the_inbox(
    amqp_url: str, tmp_path: Path
) -> None:
    """An event processed once, then replayed from the DLQ, has no second effect (one
    message in flight at a time, so the event sent after the replay proves it was handled)."""
    effects: list[str] = []
    service = Service("probe")

    @service.handles("share.accepted")
    async def count(event: CloudEvent[ShareAccepted], _ctx: HandlerContext) -> None:
        effects.append(event.id)

    db = await runtime_database(tmp_path / "probe.db")
    first, after = (accepted_event(name) for name in ("evt-replayed", "evt-after"))
    settings = Settings(
        amqp_url=amqp_url, state_dir=tmp_path, prefetch=1, audit_copies=NO_AUDIT_STORE
    )
    runtime = Runtime(settings, [service], db)
    await runtime.start()
    try:
        await runtime.publish(first)
        await until(lambda: effects == [first.message_id], within=15)
        connection = await aio_pika.connect(amqp_url)
        async with connection:  # a copy of the same event, dead-lettered by the service
            channel = await connection.channel(publisher_confirms=True)
            private = await channel.get_exchange(service.queue.private_exchange)
            copy = aio_pika.Message(
                first.body,
                message_id=first.message_id,
                user_id="guest",
                headers={wire.PRODUCER: "guest", wire.DEAD_LETTER_CAUSE: "exhausted"},
            )
            await private.publish(copy, DEAD_KEY)
        async with audit_observer(amqp_url):
            moved = await act(amqp_url, "probe", Action.REPLAY, Selection("all"), OPERATOR, GUEST)
        await runtime.publish(after)
        await until(lambda: len(effects) >= 2, within=15)
    finally:
        await runtime.stop()
        await db.dispose()
    assert [letter.message_id for letter in moved.moved] == [first.message_id]
    assert effects == [first.message_id, after.message_id]


def accepted_event(event_id: str) -> OutgoingMessage:
    event = CloudEvent[ShareAccepted](
        id=event_id,
        source="/test",
        type="share.accepted",
        time=now(),
        tenantid="demo-hospital",
        correlationid="corr-1",
        data=ShareAccepted(share_id="shr_" + "b" * 32, method="external_link", expires_at=now()),
    )
    return OutgoingMessage(event.type, event.model_dump_json().encode(), event.id)
