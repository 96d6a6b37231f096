"""Producer identity and least privilege on a real broker, with the shipped definitions.

Each test imports ``blume-share broker definitions`` into its own vhost with suffixed users
(users are global to a node) and deletes them afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import aio_pika
import pytest
from blume_runtime import wire
from blume_runtime.broker_definitions import binding_keys
from blume_runtime.dead_letters import Action, Operator, Selection, act
from blume_runtime.rabbit import RabbitTransport
from blume_runtime.topology import DEAD_KEY, QueueSpec, delay_key
from blume_runtime.transport import DeadLetterCause, Delivery, OutgoingMessage

from runtime.tests.rabbit_support import (
    BrokerUsersOnVhost,
    Received,
    Settle,
    ack,
    audit_observer,
    consuming,
    refused,
    shipped_users,
)

pytestmark = pytest.mark.integration

DISPATCHER = QueueSpec("share_dispatcher", tuple(binding_keys("share_dispatcher")))
OPERATOR = Operator(os_user="tester", asserted=None, host="test-host")


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[BrokerUsersOnVhost]:
    async with shipped_users(amqp_url) as users:
        yield users


def dispatcher(
    broker: BrokerUsersOnVhost, settle: Settle
) -> AbstractAsyncContextManager[tuple[RabbitTransport, Received]]:
    """The dispatcher's transport, connected as its own user with the shared user map."""
    return consuming(
        broker.url("share_dispatcher"),
        DISPATCHER,
        settle,
        users=broker.users("share_dispatcher"),
        max_delay_seconds=2,
    )


async def publish_as(broker: BrokerUsersOnVhost, name: str, message: OutgoingMessage) -> None:
    """Publish on ``blume.share`` with ``name``'s own user (RabbitTransport stamps user_id)."""
    transport = RabbitTransport(broker.url(name), users=broker.users(name))
    await transport.connect()
    try:
        await transport.publish(message)
    finally:
        await transport.stop()


def request(message_id: str, **headers: str | int) -> OutgoingMessage:
    return OutgoingMessage("study.send.requested", b"{}", message_id, headers=dict(headers))


async def test_a_service_runs_under_its_own_user(broker: BrokerUsersOnVhost) -> None:
    """With only the rights the definitions give it, the dispatcher declares its topology,
    consumes, retries and dead-letters; every message it sends carries its user id."""

    async def retry_then_dead_letter(delivery: Delivery) -> None:
        if delivery.attempt == 1:
            await delivery.retry_later(1, error_class="database")
        else:
            await delivery.dead_letter(DeadLetterCause.EXHAUSTED, error_class="database")

    async with dispatcher(broker, retry_then_dead_letter) as (transport, received):
        await publish_as(broker, "omegaai", request("req-1"))
        await transport.publish(OutgoingMessage("share.accepted", b"{}", "accepted-1"))
        first, again = await received.wait_for(2)
    assert (first.attempt, again.attempt) == (1, 2)
    assert first.producer == again.producer == broker.user("omegaai")
    connection = await aio_pika.connect(broker.url("ops"))
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue(DISPATCHER.dead_letter_queue, passive=True)
        dead = await dlq.get(timeout=5)
        assert dead.user_id == broker.user("share_dispatcher")
        assert dead.headers[wire.PRODUCER] == broker.user("omegaai")


async def test_the_broker_refuses_what_the_definitions_do_not_grant(
    broker: BrokerUsersOnVhost,
) -> None:
    """An upstream client cannot publish an internal event; a service cannot write into
    another service's delay queues or DLQ, nor through the default exchange; nobody can
    publish under another user's name, and the replay tool runs only as the ops user."""
    async with dispatcher(broker, ack):
        pass
    upstream, notifier = broker.url("omegaai"), broker.url("notifier")
    assert await refused(upstream, "blume.share", "study.send.requested") == ""
    assert "ACCESS_REFUSED" in await refused(upstream, "blume.share", "share.blume.published")
    for key in (delay_key(1), DEAD_KEY):
        assert "ACCESS_REFUSED" in await refused(notifier, DISPATCHER.private_exchange, key)
    assert "ACCESS_REFUSED" in await refused(notifier, "", DISPATCHER.name)
    assert "ACCESS_REFUSED" in await refused(notifier, "blume.share", "share.completed")
    forged = await refused(
        notifier, "blume.share", "share.notification.sent", user_id=broker.user("ops")
    )
    assert "PRECONDITION_FAILED" in forged
    with pytest.raises(RuntimeError, match="ops broker user"):  # nobody else's replay counts
        await act(
            notifier,
            "notifier",
            Action.REPLAY,
            Selection("all"),
            OPERATOR,
            broker.users("notifier"),
        )


async def test_delivery_producer_direct_own_retry_replay_and_forged(
    broker: BrokerUsersOnVhost,
) -> None:
    """Direct: the publisher's user. Own retry and ops replay: the original producer, kept.
    A client's forged x-blume-producer and attempt: ignored."""
    upstream = broker.user("omegaai")

    async def settle(delivery: Delivery) -> None:
        if delivery.message_id == "direct" and delivery.attempt == 1:
            await delivery.retry_later(1, error_class="database")
        elif delivery.message_id == "direct":
            await delivery.dead_letter(DeadLetterCause.UNTRUSTED_PRODUCER)
        else:
            await delivery.ack()

    async with dispatcher(broker, settle) as (_transport, received):
        await publish_as(broker, "omegaai", request("direct"))
        forged = request("forged", **{wire.PRODUCER: broker.user("blume_publisher")})
        forged.headers[wire.ATTEMPT] = 7
        await publish_as(broker, "omegaai", forged)
        await publish_as(
            broker,
            "blume_publisher",
            OutgoingMessage("share.blume.published", b"{}", "internal"),
        )
        await received.wait_for(4)
        async with audit_observer(broker.amqp_url) as audited:
            outcome = await act(
                broker.url("ops"),
                DISPATCHER.service,
                Action.REPLAY,
                Selection("id", ("direct",)),
                OPERATOR,
                broker.users("ops"),
            )
            [event] = await audited()
        await received.wait_for(5)
    assert [letter.producer for letter in outcome.moved] == [upstream]
    assert event["data"]["message_ids"] == ["direct"]
    assert event["data"]["broker_user"] == broker.user("ops")
    seen = [(d.message_id, d.attempt, d.producer) for d in received.deliveries]
    assert sorted(seen) == sorted(
        [
            ("direct", 1, upstream),
            ("direct", 2, upstream),
            ("direct", 1, upstream),
            ("forged", 1, upstream),
            ("internal", 1, broker.user("blume_publisher")),
        ]
    )
    assert received.deliveries[-1].message_id == "direct"
