"""The RabbitMQ transport on a real broker: raw deliveries, topology, delay tiers, dead letters."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import aio_pika
import pika
import pytest
import structlog
from blume_contracts.serialisation import event_body
from blume_runtime import wire
from blume_runtime.broker_definitions import POLICY_NAME, definitions
from blume_runtime.db import Database
from blume_runtime.outbox import OutboxRelay
from blume_runtime.rabbit import RabbitTransport
from blume_runtime.topology import DELIVERY_LIMIT, RUNBOOK, QueueSpec, delay_tiers
from blume_runtime.transport import DeadLetterCause, Delivery, OutgoingMessage
from blume_runtime.worker import Worker
from pydantic import SecretStr

from runtime.tests.batch_support import Gated, committed, transactions
from runtime.tests.pipeline_support import accepted_event, settings_for
from runtime.tests.rabbit_support import (
    ack,
    collect,
    consuming,
    dead_letter,
    publish_raw,
    queue_rows,
    rabbitmqctl,
    until,
    vhost_of,
)

pytestmark = pytest.mark.integration

SPEC = QueueSpec("probe", ("share.accepted", "share.link.#"))
OLD = QueueSpec("notifier", ("share.accepted",))
"""A service the shipped policy names: its queues were declared by an earlier release."""
BROKEN_JSON = b'{"specversion": "1.0", "id": "x", "data": {"patient": "DOE^JANE"'


def message(routing_key: str, message_id: str) -> OutgoingMessage:
    return OutgoingMessage(routing_key, b'{"probe": true}', message_id)


async def dlq_messages(
    amqp_url: str, spec: QueueSpec
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take everything out of the DLQ (the test's vhost is deleted afterwards anyway)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(spec.dead_letter_queue, passive=True)
        taken = []
        while (found := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(found)
        return taken


async def test_topology_is_quorum_at_least_once_and_idempotent(amqp_url: str) -> None:
    """Service, delay and dead-letter queues are quorum queues; service and delay queues
    dead-letter at least once; one delay tier per power of two up to the longest delay."""
    for _ in range(2):
        async with consuming(amqp_url, SPEC, max_delay_seconds=20):
            pass
    rows = queue_rows(amqp_url, "type", "arguments")
    tiers = delay_tiers(20)
    assert tiers == (1, 2, 4, 8, 16)
    expected = {SPEC.name, SPEC.dead_letter_queue, *map(SPEC.delay_queue, tiers)}
    assert set(rows) == expected
    assert {row[0] for row in rows.values()} == {"quorum"}
    for name in (SPEC.name, *map(SPEC.delay_queue, tiers)):
        assert "at-least-once" in rows[name][1]
        assert "reject-publish" in rows[name][1]
    assert f"{DELIVERY_LIMIT}" in rows[SPEC.name][1]


async def test_bindings_route_by_event_type(amqp_url: str) -> None:
    """The queue receives its bound types (wildcards included) and nothing else."""
    received = await collect(
        amqp_url,
        SPEC,
        ack,
        2,
        message("share.rejected", "not-bound"),
        message("share.accepted", "m-1"),
        message("share.link.issued", "m-2"),
    )
    assert sorted(d.message_id or "" for d in received) == ["m-1", "m-2"]
    assert {d.routing_key for d in received} == {"share.accepted", "share.link.issued"}


async def test_broken_json_declared_as_json_reaches_the_consumer_raw_and_is_settled(
    amqp_url: str,
) -> None:
    """Twenty broken-JSON bodies labelled application/json (more than the prefetch) each
    reach the consumer as the exact bytes sent, are settled, and the queue keeps flowing."""
    async with consuming(amqp_url, SPEC, dead_letter) as (_transport, received):
        for number in range(20):
            await publish_raw(
                amqp_url,
                "share.accepted",
                BROKEN_JSON,
                pika.BasicProperties(
                    content_type="application/json",
                    content_encoding="utf-8",
                    message_id=f"broken-{number}",
                    delivery_mode=2,
                ),
            )
        await publish_raw(amqp_url, "share.accepted", b"{}")
        deliveries = await received.wait_for(21)
    assert [d.body for d in deliveries[:20]] == [BROKEN_JSON] * 20
    assert {d.content_type for d in deliveries[:20]} == {"application/json"}
    assert {d.content_encoding for d in deliveries[:20]} == {"utf-8"}
    assert queue_rows(amqp_url, "messages", "messages_unacknowledged")[SPEC.name] == ["0", "0"]
    dead = await dlq_messages(amqp_url, SPEC)
    assert [m.message_id for m in dead[:20]] == [f"broken-{n}" for n in range(20)]
    assert dead[20].message_id, "a message without an id gets one when it is republished"
    assert [m.body for m in dead] == [BROKEN_JSON] * 20 + [b"{}"]


async def test_a_consumer_that_raises_has_its_delivery_dead_lettered_once(
    amqp_url: str,
) -> None:
    """An exception out of the consumer dead-letters the delivery (cause malformed) with one
    log line that holds neither the body nor the exception's text; the next one flows."""

    async def explode(delivery: Delivery) -> None:
        if delivery.message_id == "bomb":
            raise ValueError(delivery.body.decode())
        await delivery.ack()

    with structlog.testing.capture_logs() as logs:
        async with consuming(amqp_url, SPEC, explode) as (transport, received):
            await transport.publish(OutgoingMessage("share.accepted", BROKEN_JSON, "bomb"))
            await transport.publish(message("share.accepted", "after"))
            await received.wait_for(2)
            await asyncio.sleep(0.2)
    [dead] = await dlq_messages(amqp_url, SPEC)
    assert dead.message_id == "bomb"
    assert dead.headers[wire.DEAD_LETTER_CAUSE] == DeadLetterCause.MALFORMED.value
    assert dead.headers[wire.EVENT_TYPE] == "share.accepted"
    about_bomb = [line for line in logs if line.get("message_id") == "bomb"]
    assert len(about_bomb) == 1
    assert about_bomb[0]["decision"] == "dead_letter"
    assert about_bomb[0]["error_type"] == "ValueError"
    assert "DOE^JANE" not in json.dumps(logs, default=str)


async def test_retry_waits_its_tier_and_carries_its_history(amqp_url: str) -> None:
    """A retry of d seconds comes back after more than d/2 and about d at most (tiers 1, 2,
    4 s), with the attempt counted, the failure times, error class, event type and producer."""
    asked = {"short": 1.0, "longer": 3.0}
    first_seen: dict[str, float] = {}

    async def retry_once(delivery: Delivery) -> None:
        if delivery.attempt == 1:
            first_seen[delivery.message_id or ""] = asyncio.get_running_loop().time()
            await delivery.retry_later(asked[delivery.message_id or ""], error_class="smtp")
        else:
            await delivery.ack()

    async with consuming(amqp_url, SPEC, retry_once, max_delay_seconds=4) as (
        transport,
        received,
    ):
        for name in asked:
            await transport.publish(message("share.link.issued", name))
        await received.wait_for(4)
    retried = {
        d.message_id: (d, when)
        for d, when in zip(received.deliveries, received.times, strict=True)
        if d.attempt == 2
    }
    for name, delay in asked.items():
        delivery, when = retried[name]
        waited = when - first_seen[name]
        assert delay / 2 < waited < delay + 0.5, (name, waited)
        assert delivery.routing_key == "share.link.issued"
        assert delivery.producer == "guest"
        assert isinstance(delivery.first_failed_at, datetime)
        assert delivery.headers[wire.ERROR_CLASS] == "smtp"
        assert delivery.headers[wire.ATTEMPT] == 2
        assert wire.timestamp(delivery.headers[wire.LAST_FAILURE_AT]) is not None


async def test_a_delay_beyond_the_longest_tier_waits_in_several(amqp_url: str) -> None:
    """With tiers of 1 and 2 s, a 5 s retry still waits at least 5 s."""
    started: list[float] = []

    async def retry_long(delivery: Delivery) -> None:
        if delivery.attempt == 1:
            started.append(asyncio.get_running_loop().time())
            await delivery.retry_later(5, error_class="database")
        else:
            await delivery.ack()

    async with consuming(amqp_url, SPEC, retry_long, max_delay_seconds=2) as (
        transport,
        received,
    ):
        await transport.publish(message("share.accepted", "patient-one"))
        [_first, again] = await received.wait_for(2, within=20)
    assert again.attempt == 2
    assert 5 <= received.times[1] - started[0] < 8


async def test_out_of_range_amqp_values_do_not_cut_the_connection(amqp_url: str) -> None:
    """A timestamp past year 9999 (a millisecond epoch sent as seconds, say) reaches the
    consumer like any other delivery, and the consumer stays attached."""
    async with consuming(amqp_url, SPEC, dead_letter) as (transport, received):
        await publish_raw(
            amqp_url,
            "share.accepted",
            b"{}",
            pika.BasicProperties(timestamp=2**62, message_id="far-future", headers={"n": -5}),
        )
        await transport.publish(message("share.accepted", "next"))
        deliveries = await received.wait_for(2)
        assert transport.consumer_states() == {SPEC.name: True}
    assert [d.message_id for d in deliveries] == ["far-future", "next"]


async def test_hostile_headers_from_an_anonymous_publisher_are_not_believed(
    amqp_url: str,
) -> None:
    """Without a validated user_id, x-blume-* headers (a huge attempt, a forged producer and
    x-death) are ignored: attempt 1, no producer, the real routing key."""
    async with consuming(amqp_url, SPEC, ack) as (_transport, received):
        await publish_raw(
            amqp_url,
            "share.accepted",
            b"{}",
            pika.BasicProperties(
                headers={
                    wire.ATTEMPT: "99999999999999999999",
                    wire.PRODUCER: "share_dispatcher",
                    wire.EVENT_TYPE: "share.blume.published",
                    wire.X_DEATH: "forged",
                }
            ),
        )
        [delivery] = await received.wait_for(1)
    assert (delivery.attempt, delivery.producer, delivery.routing_key) == (
        1,
        None,
        "share.accepted",
    )


async def test_a_queue_of_an_earlier_release_works_once_the_policy_is_applied(
    amqp_url: str,
) -> None:
    """Queues declared the old way refuse the new arguments: with the shipped policy set by
    rabbitmqctl, the new runtime uses them as they are (one warning naming the runbook),
    they dead-letter at least once, and retries and dead letters work."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        quorum = {"x-queue-type": "quorum"}
        await channel.declare_queue(OLD.dead_letter_queue, durable=True, arguments=quorum)
        await channel.declare_queue(
            OLD.name,
            durable=True,
            arguments={
                **quorum,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": OLD.dead_letter_queue,
                "x-delivery-limit": DELIVERY_LIMIT,
            },
        )
    policies = definitions(vhost_of(amqp_url))["policies"]
    [policy] = [entry for entry in policies if entry["name"] == POLICY_NAME]
    rabbitmqctl(
        "set_policy",
        "-p",
        vhost_of(amqp_url),
        "--apply-to",
        policy["apply-to"],
        policy["name"],
        policy["pattern"],
        json.dumps(policy["definition"]),
    )

    async def retry_then_dead_letter(delivery: Delivery) -> None:
        if delivery.attempt == 1:
            await delivery.retry_later(1, error_class="database")
        else:
            await delivery.dead_letter(DeadLetterCause.EXHAUSTED, error_class="database")

    with structlog.testing.capture_logs() as logs:
        async with consuming(amqp_url, OLD, retry_then_dead_letter, max_delay_seconds=2) as (
            transport,
            received,
        ):
            await transport.publish(message("share.accepted", "old-queue"))
            await received.wait_for(2)
            await asyncio.sleep(0.3)
    warnings = [line for line in logs if line["log_level"] == "warning"]
    assert [(line["queue"], line["runbook"]) for line in warnings] == [(OLD.name, RUNBOOK)]
    [dead] = await dlq_messages(amqp_url, OLD)
    assert (dead.message_id, dead.headers[wire.DEAD_LETTER_CAUSE]) == ("old-queue", "exhausted")
    applied = queue_rows(amqp_url, "policy", "arguments")
    assert applied[OLD.name][0] == policy["name"]
    assert "at-least-once" not in applied[OLD.name][1], "the old queue lacks the argument"
    listed = rabbitmqctl("list_policies", "-p", vhost_of(amqp_url))
    assert '"dead-letter-strategy":"at-least-once"' in listed
    assert '"overflow":"reject-publish"' in listed


async def test_a_deleted_queue_is_redeclared_and_consumed_again(amqp_url: str) -> None:
    """The broker cancels our consumer when its queue is deleted; the watchdog redeclares
    the queue with its bindings and consumes again, with no restart."""
    async with consuming(amqp_url, SPEC, ack, watchdog_seconds=0.5) as (transport, received):
        rabbitmqctl("delete_queue", "-p", vhost_of(amqp_url), SPEC.name)
        await until(lambda: not transport.consumer_states()[SPEC.name], within=10)
        await until(lambda: transport.consumer_states()[SPEC.name], within=10)
        await transport.publish(message("share.accepted", "after-recreation"))
        [delivery] = await received.wait_for(1)
    assert delivery.message_id == "after-recreation"


async def test_deliveries_queued_behind_a_transaction_commit_together_and_are_all_acked(
    amqp_url: str, migrated_database_url: str, tmp_path: Path
) -> None:
    """On RabbitMQ and PostgreSQL: ten deliveries arriving while one holds its transaction
    open commit in one more transaction, and every one of the eleven is acked (none left
    unacknowledged or requeued), its inbox row written once; the ten finishing together
    are acked in fewer frames than deliveries (``multiple``), which the broker accepts."""
    database = Database(migrated_database_url)
    gated = Gated()
    settings = settings_for(tmp_path, amqp_url=SecretStr(amqp_url))
    transport = RabbitTransport(amqp_url, prefetch=16)
    worker = Worker(gated.service, database, OutboxRelay(database, transport), settings)
    transport.subscribe(gated.service.queue, worker)
    queue = gated.service.queue.name
    await transport.start()
    try:
        for event_id in ["gate", *(f"e{index}" for index in range(10))]:
            body = event_body(accepted_event(event_id))
            await transport.publish(OutgoingMessage("share.accepted", body, event_id))
        await gated.gate_entered.wait()
        all_delivered = ["11"]  # the gate's and the ten queued behind it, none acked yet
        await until(
            lambda: queue_rows(amqp_url, "messages_unacknowledged")[queue] == all_delivered,
            within=10,
        )
        before = transactions()
        gated.release.set()
        await until(lambda: queue_rows(amqp_url, "messages")[queue] == ["0"], within=20)
        assert transactions() - before == 2
        assert await committed(database) == ([f"e{index}" for index in range(10)], 11)
        assert queue_rows(amqp_url, "messages_unacknowledged")[queue] == ["0"]
        assert transport.ack_frames_sent < 11
    finally:
        await transport.stop()
        await database.dispose()
