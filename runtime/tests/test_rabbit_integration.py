"""The RabbitMQ transport on a real broker: topology, confirms, delayed retry, dead letters."""

from __future__ import annotations

import asyncio
import subprocess
from urllib.parse import unquote, urlsplit

import pytest
from blume_runtime.rabbit import RabbitTransport
from blume_runtime.topology import QueueSpec
from blume_runtime.transport import OutgoingMessage

from runtime.tests.rabbit_support import collect

pytestmark = pytest.mark.integration

SPEC = QueueSpec("probe", ("share.accepted", "share.link.#"))


def queue_types(amqp_url: str) -> dict[str, str]:
    vhost = unquote(urlsplit(amqp_url).path.lstrip("/"))
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "type"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split("\t") for line in listed.splitlines()[1:] if "\t" in line)


def message(routing_key: str, message_id: str) -> OutgoingMessage:
    return OutgoingMessage(routing_key, b'{"probe": true}', message_id)


async def test_topology_is_quorum_and_idempotent(amqp_url: str) -> None:
    """Service, retry and dead-letter queues are quorum queues; declaring twice is harmless."""
    for _ in range(2):
        transport = RabbitTransport(amqp_url)
        transport.subscribe(SPEC, lambda _delivery: asyncio.sleep(0))
        await transport.start()
        await transport.stop()
    types = queue_types(amqp_url)
    assert types["blume.share.probe"] == "quorum"
    assert types["blume.share.probe.retry"] == "quorum"
    assert types["blume.share.probe.dlq"] == "quorum"


async def test_bindings_route_by_event_type(amqp_url: str) -> None:
    """The queue receives its bound types (wildcards included) and nothing else."""
    received = await collect(
        amqp_url,
        SPEC,
        "ack",
        2,
        message("share.rejected", "not-bound"),
        message("share.accepted", "m-1"),
        message("share.link.issued", "m-2"),
    )
    assert sorted(d.message_id or "" for d in received) == ["m-1", "m-2"]
    assert {d.routing_key for d in received} == {"share.accepted", "share.link.issued"}


async def test_retry_later_redelivers_after_a_delay_with_attempt_count(amqp_url: str) -> None:
    """retry_later goes through the TTL queue and comes back with the attempt incremented."""
    received = await collect(amqp_url, SPEC, "retry", 3, message("share.accepted", "m-retry"))
    assert [d.attempt for d in received] == [1, 2, 3]
    assert {d.message_id for d in received} == {"m-retry"}


async def test_dead_letter_moves_the_message_to_the_dlq(amqp_url: str) -> None:
    """A dead-lettered message waits in the service's DLQ with its body intact."""
    await collect(amqp_url, SPEC, "dead_letter", 1, message("share.accepted", "m-dead"))
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue(SPEC.dead_letter_queue, passive=True)
        dead = await dlq.get(timeout=5)
        assert dead.message_id == "m-dead"
        assert dead.body == b'{"probe": true}'
        await dead.ack()
