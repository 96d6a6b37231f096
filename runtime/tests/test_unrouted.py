"""``blume.share.unrouted``: what ``blume.share`` routes to no queue reaches the queues bound
to its alternate exchange, on the embedded broker, on a real one with the policy set, and
under the shipped definitions (real RabbitMQ, per-test vhost)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aio_pika
import pytest
from blume_contracts.envelope import EXCHANGE
from blume_runtime.broker_definitions import (
    DEFAULT_TIERS,
    UNROUTED_CONSUMERS,
    binding_keys,
    definitions,
)
from blume_runtime.service import Service
from blume_runtime.topology import (
    UNROUTED_EXCHANGE,
    UNROUTED_POLICY,
    UNROUTED_POLICY_NAME,
    UNROUTED_POLICY_PATTERN,
    QueueSpec,
    declare,
)
from blume_runtime.transport import Consumer, Delivery, InMemoryTransport, OutgoingMessage

from runtime.tests.rabbit_support import depth, publish_raw, rabbitmqctl, shipped_users, vhost_of

ROUTED = QueueSpec("probe_routed", ("share.accepted",))
CATCHER = QueueSpec("probe_catcher", ("share.rejected",), binds_unrouted=True)
AUDIT = "audit_sink"


def message(routing_key: str, message_id: str) -> OutgoingMessage:
    return OutgoingMessage(routing_key, b"{}", message_id)


async def test_in_memory_an_unroutable_message_reaches_the_unrouted_queue_once() -> None:
    """Embedded broker: a message no binding matches goes once to each queue that binds the
    unrouted exchange; one that some binding matches (another queue's, or the catcher's own)
    goes only where it is bound."""
    transport = InMemoryTransport()
    seen: dict[str, list[str]] = {ROUTED.name: [], CATCHER.name: []}

    def recorder(queue: str) -> Consumer:
        async def consumer(delivery: Delivery) -> None:
            seen[queue].append(delivery.message_id or "")
            await delivery.ack()

        return consumer

    for spec in (ROUTED, CATCHER):
        transport.subscribe(spec, recorder(spec.name))
    await transport.start()
    try:
        await transport.publish(message("share.accepted", "bound-elsewhere"))
        await transport.publish(message("share.rejected", "bound-by-catcher"))
        await transport.publish(message("share.revoked", "bound-nowhere"))
        await asyncio.wait_for(transport.wait_idle(), timeout=2)
    finally:
        await transport.stop()
    assert seen == {
        ROUTED.name: ["bound-elsewhere"],
        CATCHER.name: ["bound-by-catcher", "bound-nowhere"],
    }


def test_a_service_binds_extra_keys_and_the_unrouted_exchange_when_asked() -> None:
    """``Service(extra_keys=..., binds_unrouted=True)``: the queue is bound by its handled
    types and the extra keys (once each) and binds the unrouted exchange; ``bind_all`` still
    binds ``#``; by default nothing binds the unrouted exchange."""

    async def handler(*_: object) -> None:
        return None

    service = Service("probe", extra_keys=("share.accepted", "share.revoked"), binds_unrouted=True)
    service.handles("share.accepted")(handler)
    assert service.queue == QueueSpec(
        "probe", ("share.accepted", "share.revoked"), binds_unrouted=True
    )
    assert Service("probe", bind_all=True, extra_keys=("x",)).queue == QueueSpec("probe", ("#",))
    assert not Service("probe").queue.binds_unrouted


def test_the_definitions_hold_the_unrouted_exchange_its_policy_and_binding() -> None:
    """The generated definitions declare ``blume.share.unrouted`` (durable fanout), bind the
    audit sink's queue (and only it) to it, link it to ``blume.share`` by an exchanges-only
    policy whose pattern matches no queue policy's objects, and let the audit sink's user
    declare and read that exchange while no user may write it."""
    document = definitions("qa")
    [exchange] = [entry for entry in document["exchanges"] if entry["name"] == UNROUTED_EXCHANGE]
    assert (exchange["type"], exchange["durable"], exchange["arguments"]) == ("fanout", True, {})
    unrouted = [entry for entry in document["bindings"] if entry["source"] == UNROUTED_EXCHANGE]
    assert [(entry["destination"], entry["routing_key"]) for entry in unrouted] == [
        (f"blume.share.{name}", "") for name in sorted(UNROUTED_CONSUMERS)
    ]
    [policy] = [entry for entry in document["policies"] if entry["name"] == UNROUTED_POLICY_NAME]
    assert policy == {
        "vhost": "qa",
        "name": UNROUTED_POLICY_NAME,
        "pattern": r"^blume\.share$",
        "apply-to": "exchanges",
        "priority": 0,
        "definition": {"alternate-exchange": "blume.share.unrouted"},
    }
    others = [entry for entry in document["policies"] if entry is not policy]
    assert {entry["apply-to"] for entry in others} == {"queues"}
    rights = {entry["user"]: entry for entry in document["permissions"]}
    for user, entry in rights.items():
        assert not re.fullmatch(entry["write"], UNROUTED_EXCHANGE), user
        may_bind = user in UNROUTED_CONSUMERS
        for kind in ("configure", "read"):
            matched = bool(re.fullmatch(entry[kind], UNROUTED_EXCHANGE))
            assert matched == may_bind, (user, kind)


OPERATIONS = Path(__file__).resolve().parents[2] / "docs/operations.md"


def test_the_runbook_sets_the_policy_the_definitions_ship() -> None:
    """docs/operations.md's ``rabbitmqctl set_policy`` for an existing deployment names the
    definitions' policy, its pattern, ``--apply-to exchanges`` and its definition."""
    runbook = OPERATIONS.read_text(encoding="utf-8").replace("\\\n", " ")
    found = re.search(
        rf"set_policy -p blume --apply-to exchanges {UNROUTED_POLICY_NAME}\s+'([^']+)' '([^']+)'",
        runbook,
    )
    assert found is not None
    assert found.group(1) == UNROUTED_POLICY_PATTERN
    assert json.loads(found.group(2)) == UNROUTED_POLICY


def set_unrouted_policy(vhost: str) -> None:
    """What docs/operations.md tells an operator to run on a broker deployed before it."""
    rabbitmqctl(
        "set_policy",
        "-p",
        vhost,
        "--apply-to",
        "exchanges",
        UNROUTED_POLICY_NAME,
        UNROUTED_POLICY_PATTERN,
        '{"alternate-exchange":"blume.share.unrouted"}',
    )


@pytest.mark.integration
async def test_with_the_policy_an_unroutable_message_reaches_the_unrouted_queue(
    amqp_url: str,
) -> None:
    """Real broker, policy set with rabbitmqctl on ``blume.share`` as it exists (declared by
    ``declare`` without arguments): the queue ``declare`` bound to the unrouted exchange
    (declared durable fanout) receives a message no queue binds, and not one another queue
    binds; one it binds itself it receives once."""
    # Test vhosts come with the policy (conftest): taken off, to set it as the runbook does.
    rabbitmqctl("clear_policy", "-p", vhost_of(amqp_url), UNROUTED_POLICY_NAME)
    set_unrouted_policy(vhost_of(amqp_url))
    await declare(amqp_url, [ROUTED, CATCHER], (1,), set())
    listed = rabbitmqctl("list_exchanges", "-p", vhost_of(amqp_url), "name", "type", "durable")
    assert f"{UNROUTED_EXCHANGE}\tfanout\ttrue" in listed.splitlines()
    await publish_raw(amqp_url, "share.accepted", b"{}")
    await publish_raw(amqp_url, "share.rejected", b"{}")
    await publish_raw(amqp_url, "share.revoked", b"{}")
    assert await depth(amqp_url, ROUTED.name) == 1
    assert await depth(amqp_url, CATCHER.name) == 2
    policies = rabbitmqctl("list_exchanges", "-p", vhost_of(amqp_url), "name", "policy")
    assert f"{EXCHANGE}\t{UNROUTED_POLICY_NAME}" in policies.splitlines()
    assert UNROUTED_POLICY == {"alternate-exchange": UNROUTED_EXCHANGE}


async def _publish_confirmed(url: str, user: str, routing_key: str) -> None:
    """Publish on ``blume.share`` as ``user`` (its user id stamped), mandatory and confirmed:
    a message routed through the alternate exchange counts as routed, so nothing returns."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(EXCHANGE, ensure=False)
        await exchange.publish(aio_pika.Message(b"{}", user_id=user), routing_key, mandatory=True)


@pytest.mark.integration
async def test_under_the_shipped_definitions_an_unroutable_event_reaches_the_audit_queue(
    amqp_url: str,
) -> None:
    """Shipped definitions imported: the audit sink's own user declares the unrouted exchange
    again (after it was deleted) and binds its queue; with its ``#`` binding gone, an event
    the access gateway's user may publish (topic permission) but no queue binds lands in the
    audit sink's queue, though that user has no permission on the unrouted exchange; one
    another queue binds does not; both policies apply, each to its own objects."""
    vhost = vhost_of(amqp_url)
    async with shipped_users(amqp_url) as users:
        admin = await aio_pika.connect(amqp_url)
        async with admin:
            channel = await admin.channel()
            await channel.exchange_delete(UNROUTED_EXCHANGE)
            spec = QueueSpec(AUDIT, tuple(binding_keys(AUDIT)), binds_unrouted=True)
            warned: set[str] = set()
            await declare(users.url(AUDIT), [spec], DEFAULT_TIERS, warned)
            assert warned == set()
            audit = await channel.get_queue(spec.name, ensure=False)
            await audit.unbind(EXCHANGE, "#")

        gateway = users.user("access_gateway")
        await _publish_confirmed(users.url("access_gateway"), gateway, "share.link.denied")
        await _publish_confirmed(users.url("access_gateway"), gateway, "share.link.opened")
        assert await depth(amqp_url, f"blume.share.{AUDIT}") == 1
        assert await depth(amqp_url, "blume.share.share_dispatcher") == 1

        exchanges = rabbitmqctl("list_exchanges", "-p", vhost, "name", "policy").splitlines()
        with_policy = [
            line.split("\t")[0] for line in exchanges if line.endswith("\tblume-share-unrouted")
        ]
        assert with_policy == [EXCHANGE]
        queues = rabbitmqctl("list_queues", "-p", vhost, "name", "policy").splitlines()
        assert f"blume.share.{AUDIT}\tblume-share-at-least-once" in queues
