"""The library on the real RabbitMQ, without the workers: what ``send`` puts on the wire,
that every publish is confirmed (refusals raise), and how the outcome consumer settles
every delivery. Each test has its own vhost; pika sets the scene and observes."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from blume_contracts.artefacts import EXAMPLES_DIR
from blume_contracts.events import ShareAccepted, ShareRejected
from blume_contracts.ids import share_id_for
from blume_share_client import OutcomeConsumer, PublishError, ShareClient, TopologyError
from blume_share_client.messages import send_event

from clients.omegaai.tests.broker_support import consuming, ready_messages, until
from runtime.tests.rabbit_support import queue_rows, rabbitmqctl, shipped_users, vhost_of

pytestmark = pytest.mark.integration

REQUEST = json.loads((EXAMPLES_DIR / "study.send.requested.json").read_text())["data"]
EXCHANGE = "blume.share"


def example(event_type: str, **data: Any) -> dict[str, Any]:
    """The contract's example event of ``event_type`` with a fresh id and changed data."""
    event = json.loads((EXAMPLES_DIR / f"{event_type}.json").read_text())
    event["id"] = str(uuid.uuid4())
    event["data"].update(data)
    return dict(event)


@pytest.fixture
def admin(amqp_url: str) -> Iterator[Any]:
    """A pika channel as the vhost's administrator, with publisher confirms."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.confirm_delivery()
    try:
        yield channel
    finally:
        connection.close()


def publish(channel: Any, routing_key: str, body: bytes | dict[str, Any]) -> None:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    channel.basic_publish(EXCHANGE, routing_key, payload, pika.BasicProperties(delivery_mode=2))


def bound_queue(channel: Any, *routing_keys: str, **arguments: Any) -> str:
    """A queue of the test's on ``blume.share`` (declaring the exchange as the workers do)."""
    channel.exchange_declare(EXCHANGE, "topic", durable=True)
    queue = f"observer-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(queue, durable=True, arguments=arguments or None)
    for routing_key in routing_keys:
        channel.queue_bind(queue, EXCHANGE, routing_key)
    return queue


def test_a_publish_to_a_missing_exchange_raises(amqp_url: str) -> None:
    """No blume.share in the vhost (the system is not deployed): send raises PublishError
    with the broker's reason and the ids to retry with; nothing is silently dropped."""
    with ShareClient(amqp_url) as client, pytest.raises(PublishError) as raised:
        client.send(REQUEST, event_id="evt-missing-exchange")
    assert "NOT_FOUND" in raised.value.reason
    assert raised.value.event_id == "evt-missing-exchange"
    event = send_event(REQUEST, source="/omegaai", event_id="evt-missing-exchange")
    assert raised.value.share_id == share_id_for(event)


def test_a_broker_that_cannot_be_reached_raises_a_publish_error() -> None:
    """Nothing listens at the address: after its retries send raises PublishError (not a
    kombu or socket error), within the time the retries take."""
    started = time.monotonic()
    unreachable = ShareClient("amqp://guest:guest@127.0.0.1:9/", max_retries=1)
    with unreachable as client, pytest.raises(PublishError) as raised:
        client.send(REQUEST)
    assert time.monotonic() - started < 15
    assert raised.value.event_id


def test_a_request_no_queue_would_receive_raises(amqp_url: str, admin: Any) -> None:
    """The exchange exists but nothing is bound (mandatory publish): PublishError NO_ROUTE."""
    admin.exchange_declare(EXCHANGE, "topic", durable=True)
    with ShareClient(amqp_url) as client, pytest.raises(PublishError) as raised:
        client.send(REQUEST)
    assert "NO_ROUTE" in raised.value.reason


def test_a_message_the_broker_refuses_raises_even_after_an_unroutable_one(
    amqp_url: str, admin: Any
) -> None:
    """A basic.nack (a full queue that rejects publishes) raises PublishError, also when the
    client's previous message was unroutable: no publish takes another's confirm for its own."""
    admin.exchange_declare(EXCHANGE, "topic", durable=True)
    with ShareClient(amqp_url) as client:
        with pytest.raises(PublishError, match="NO_ROUTE"):
            client.send(REQUEST)
        bound_queue(
            admin, "study.send.requested", **{"x-max-length": 0, "x-overflow": "reject-publish"}
        )
        with pytest.raises(PublishError, match=r"basic\.nack"):
            client.send(REQUEST)


def test_send_and_revoke_put_the_pinned_contract_on_the_wire(amqp_url: str, admin: Any) -> None:
    """Routing key = type, persistent, message_id = event id, content type
    application/cloudevents+json, no content encoding but identity, user_id = the login;
    each publish confirmed and delivered once, after an earlier failure too."""
    admin.exchange_declare(EXCHANGE, "topic", durable=True)
    with ShareClient(amqp_url, source="/omegaai/send-drawer") as client:
        with pytest.raises(PublishError):
            client.send(REQUEST)  # unroutable: the client starts again on a new connection
        queue = bound_queue(admin, "study.send.requested", "share.revoke.requested")
        share_ids = [client.send(REQUEST, correlation_id=f"omega-{n}") for n in range(3)]
        revocation_id = client.revoke(
            share_ids[0], tenant_id="demo-hospital", requested_by="u-123", reason="wrong doctor"
        )
    received = []
    while True:
        method, properties, body = admin.basic_get(queue, auto_ack=True)
        if method is None:
            break
        received.append((method.routing_key, properties, json.loads(body)))
    assert [routing_key for routing_key, _, _ in received] == [
        *["study.send.requested"] * 3,
        "share.revoke.requested",
    ]
    for routing_key, properties, event in received:
        assert event["type"] == routing_key
        assert event["source"] == "/omegaai/send-drawer"
        assert properties.message_id == event["id"]
        assert properties.delivery_mode == 2
        assert properties.content_type == "application/cloudevents+json"
        assert properties.content_encoding == "identity"
        assert properties.user_id == "guest"
    requests = [event for _, _, event in received[:3]]
    assert [event["correlationid"] for event in requests] == ["omega-0", "omega-1", "omega-2"]
    assert [share_id_for(send_event(e, source="-")) for e in requests] == share_ids
    assert received[3][2]["id"] == revocation_id
    assert received[3][2]["data"] == {
        "share_id": share_ids[0],
        "requested_by": "u-123",
        "reason": "wrong doctor",
    }


def test_only_outcome_events_reach_the_callback_and_the_rest_is_dead_lettered(
    amqp_url: str, admin: Any
) -> None:
    """Not JSON, not a CloudEvent, another type under an outcome's key, broken data: each is
    rejected into <queue>.dlq; the valid outcomes behind them reach the callback parsed
    into their contract models, and the queue ends empty (nothing stalls it)."""
    admin.exchange_declare(EXCHANGE, "topic", durable=True)
    queue = "omegaai.outcomes"
    accepted = example("share.accepted")
    rejected = example("share.rejected")
    with consuming(amqp_url, queue) as (_consumer, collected):
        publish(admin, "share.accepted", b"\xff\xfe not json")
        publish(admin, "share.completed", {"hello": "world"})
        publish(admin, "share.failed", example("share.link.opened"))
        publish(admin, "share.revoked", example("share.revoked", share_id="shr_broken"))
        publish(admin, "share.link.opened", example("share.link.opened"))  # not bound
        publish(admin, "share.accepted", accepted)
        publish(admin, "share.rejected", rejected)
        collected.wait_for("share.rejected", within=10)
        until(lambda: ready_messages(amqp_url, f"{queue}.dlq") == 4, within=10, what="4 DLQ")
    assert [outcome.id for outcome in collected.outcomes] == [accepted["id"], rejected["id"]]
    first, second = collected.outcomes
    assert isinstance(first.data, ShareAccepted)
    assert isinstance(second.data, ShareRejected)
    assert second.data.reason == "invalid_recipient_email"
    assert second.correlationid == rejected["correlationid"]
    assert ready_messages(amqp_url, queue) == 0
    rows = queue_rows(amqp_url, "type", "durable")
    assert rows[queue] == ["quorum", "true"]
    assert rows[f"{queue}.dlq"] == ["quorum", "true"]


def test_a_failing_callback_gets_the_message_again_up_to_the_delivery_limit(
    amqp_url: str, admin: Any
) -> None:
    """An outcome whose callback raises goes back to the queue and is delivered again; past
    the delivery limit the broker dead-letters it. Outcomes behind it are not held up."""
    admin.exchange_declare(EXCHANGE, "topic", durable=True)
    queue = "omegaai.flaky"
    poison = example("share.accepted", share_id=f"shr_{uuid.uuid4().hex}")
    healthy = example("share.completed", share_id=f"shr_{uuid.uuid4().hex}")
    attempts: list[str] = []
    delivered: list[str] = []

    def callback(outcome: Any) -> None:
        attempts.append(outcome.id)
        if outcome.id == poison["id"]:
            raise RuntimeError("OmegaAI's database is down")
        delivered.append(outcome.id)

    options = {"delivery_limit": 2, "redelivery_delay": 0.05}
    with consuming(amqp_url, queue, callback, **options):
        publish(admin, "share.accepted", poison)
        publish(admin, "share.completed", healthy)
        until(lambda: ready_messages(amqp_url, f"{queue}.dlq") == 1, within=20, what="DLQ")
    assert delivered == [healthy["id"]]
    assert attempts.count(poison["id"]) == 3  # the first delivery and two more
    assert ready_messages(amqp_url, queue) == 0


async def test_the_shipped_upstream_user_may_declare_only_its_own_queues(amqp_url: str) -> None:
    """As ``omegaai`` (the shipped definitions), a queue named omegaai.* is declared and
    bound to the outcome types; for another name run() raises TopologyError at once rather
    than retrying a refusal that cannot heal."""
    async with shipped_users(amqp_url) as users:
        with consuming(users.url("omegaai"), "omegaai.permitted"):
            pass
        refused = OutcomeConsumer(users.url("omegaai"), "elsewhere.outcomes", lambda _: None)
        with pytest.raises(TopologyError, match="ACCESS_REFUSED"):
            refused.run()
    queues = queue_rows(amqp_url, "type")
    assert queues["omegaai.permitted"] == ["quorum"]
    assert "elsewhere.outcomes" not in queues


def close_library_connections(vhost: str) -> int:
    """``rabbitmqctl close_connection`` for the library's (py-amqp's) connections to ``vhost``."""
    listed = rabbitmqctl("list_connections", "pid", "vhost", "client_properties")
    pids = [
        line.split("\t")[0]
        for line in listed.splitlines()
        if f"\t{vhost}\t" in line and "py-amqp" in line
    ]
    for pid in pids:
        rabbitmqctl("close_connection", pid, "test: the broker drops the consumer")
    return len(pids)


def test_the_consumer_comes_back_after_the_broker_drops_its_connection(
    amqp_url: str, admin: Any
) -> None:
    """The broker closes the consumer's connection; kombu reconnects, the topology is
    declared again, and the next outcome is delivered (the consumer does not stall)."""
    admin.exchange_declare(EXCHANGE, "topic", durable=True)
    before, after = example("share.accepted"), example("share.completed")
    with consuming(amqp_url, "omegaai.resilient") as (_consumer, collected):
        publish(admin, "share.accepted", before)
        collected.wait_for("share.accepted", within=10)
        assert close_library_connections(vhost_of(amqp_url)) == 1
        publish(admin, "share.completed", after)
        collected.wait_for("share.completed", within=30)
    assert [outcome.id for outcome in collected.outcomes] == [before["id"], after["id"]]
