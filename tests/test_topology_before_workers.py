"""The shipped broker definitions hold the whole topology, so that nothing published before a
consumer first started is lost to it (real RabbitMQ).

The chaos suite found it: ``patients import`` leaves the accounts' events in blume_publisher's
outbox, and the first blume_publisher to start published them before the dispatcher and the
audit sink had declared their queues; both never saw them, and the patients' shares were
rejected as not enrolled.
"""

from __future__ import annotations

import json
from pathlib import Path

import aio_pika
import pytest
from blume_contracts.envelope import EXCHANGE
from blume_runtime.broker_definitions import definitions
from blume_runtime.settings import Settings
from blume_runtime.topology import declare, delay_tiers
from blume_share.services import SERVICES

from runtime.tests.rabbit_support import depth, shipped_users

pytestmark = pytest.mark.integration

CONSUMERS_OF_ACCOUNTS = ("share_dispatcher", "access_gateway")
"""The queues patient.account.updated reaches: not the audit sink's (its producer stages it)."""


def test_the_definitions_bind_each_queue_to_what_its_worker_binds(tmp_path: Path) -> None:
    """Per service, the definitions bind its queue to ``blume.share`` by exactly the keys its
    worker binds, and declare its queues with the worker's arguments."""
    document = definitions()
    for name, build in SERVICES.items():
        queue = build(Settings(state_dir=tmp_path)).queue
        bound = {
            entry["routing_key"]
            for entry in document["bindings"]
            if entry["source"] == EXCHANGE and entry["destination"] == queue.name
        }
        assert bound == set(queue.binding_keys), name
        declared = {entry["name"] for entry in document["queues"]}
        assert {queue.name, queue.dead_letter_queue} <= declared, name


async def test_an_event_published_before_its_consumers_ever_ran_waits_for_them(
    amqp_url: str, tmp_path: Path
) -> None:
    """With the definitions imported and no worker started yet, an account event reaches the
    dispatcher's and the gateway's queues (not the audit sink's); then each worker, as its
    own least-privileged user, declares its topology and finds it exactly as it would have
    made it (no argument mismatch, nothing refused)."""
    async with shipped_users(amqp_url) as users:
        body = json.dumps({"specversion": "1.0"}).encode()
        connection = await aio_pika.connect(users.url("blume_publisher"))
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(EXCHANGE, ensure=False)
            message = aio_pika.Message(body, user_id=users.user("blume_publisher"))
            await exchange.publish(message, "patient.account.updated", mandatory=True)

        for name in CONSUMERS_OF_ACCOUNTS:
            assert await depth(amqp_url, f"blume.share.{name}") == 1, name
        assert await depth(amqp_url, "blume.share.audit_sink") == 0

        settings = Settings(state_dir=tmp_path)
        tiers = delay_tiers(settings.retry_max_delay_seconds)
        for name, build in SERVICES.items():
            warned: set[str] = set()
            await declare(users.url(name), [build(settings).queue], tiers, warned)
            assert warned == set(), name
