"""A rogue broker user cannot make us act: real RabbitMQ, PostgreSQL and SMTP.

Issue 8, defect 5, as reported: a client that may publish on ``blume.share`` (here a broker
user of its own with every permission on the vhost, created for this test and deleted after)
publishes ``share.blume.published`` with ``source: /evil/forged`` and an address of its
choosing. The workers run as the test's broker user (single-user mode): the forged event is
refused by every consumer, whether it carries the rogue's validated ``user_id`` or none.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pika
import psycopg
import pytest
from blume_contracts.envelope import RawEvent
from blume_contracts.ids import share_id_for

from tests.conftest import RunningSystem, request_event
from tests.test_forged_events import CHOSEN_ADDRESS, forged_publication

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CONSUMERS = ("notifier", "share_dispatcher")
"""The workers whose queues bind share.blume.published (the audit sink's does not: its
producer stages it, and each consumer that refuses a forgery stages the security record)."""


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def rogue_url(amqp_url: str) -> Iterator[str]:
    """A broker user of its own, allowed everything on the test's vhost; deleted after."""
    user = f"blume-rogue-{uuid.uuid4().hex[:10]}"
    password = secrets.token_hex(16)  # a leading "-" would read as a rabbitmqctl option
    parts = urlsplit(amqp_url)
    rabbitmqctl("add_user", user, password)
    try:
        rabbitmqctl("set_permissions", "-p", unquote(parts.path[1:]), user, ".*", ".*", ".*")
        netloc = f"{quote(user)}:{quote(password)}@{parts.hostname}:{parts.port or 5672}"
        yield urlunsplit(parts._replace(netloc=netloc))
    finally:
        rabbitmqctl("delete_user", user)


def publish_as_rogue(url: str, events: list[tuple[dict[str, Any], bool]]) -> str:
    """Publish each event, with the rogue's own (broker-validated) user_id or none."""
    user = unquote(urlsplit(url).username or "")
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for event, stamped in events:
            channel.basic_publish(
                "blume.share",
                event["type"],
                json.dumps(event).encode(),
                pika.BasicProperties(
                    content_type="application/cloudevents+json",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=event["id"],
                    user_id=user if stamped else None,
                ),
                mandatory=True,
            )
    finally:
        connection.close()
    return user


def security_records(database_url: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT chain_id, event_id, payload FROM audit_records "
            "WHERE event_type = 'security.untrusted_producer' ORDER BY seq"
        ).fetchall()
    return [{"chain": row[0], "id": row[1], **json.loads(row[2])} for row in rows]


def recorded_ids(database_url: str) -> set[str]:
    with psycopg.connect(database_url) as connection:
        return {row[0] for row in connection.execute("SELECT event_id FROM audit_records")}


async def test_a_forged_publication_from_a_rogue_user_sends_no_email(
    system: RunningSystem, smtp_server: Any, rogue_url: str
) -> None:
    """Two forgeries (with the rogue's validated user_id, and with none): no email to the
    chosen address, each dead-lettered by every consumer, two security records in the audit
    store (one per forgery, whichever consumers refused it) and neither forgery recorded as an
    event, nothing reaching the audit sink's queue; a genuine request still completes."""
    stamped, unstamped = forged_publication("forged-1"), forged_publication("forged-2")
    rogue = publish_as_rogue(rogue_url, [(stamped, True), (unstamped, False)])
    genuine = request_event()
    system.publish(genuine)
    await system.wait_for(
        "share.completed", share_id=share_id_for(RawEvent.model_validate(genuine))
    )

    recipients = [address.addr_spec for m in smtp_server.messages for address in m["To"].addresses]
    assert recipients == ["bob.jones@clinic.example"]
    deadline = time.monotonic() + 30
    while len(records := security_records(system.database_url)) < 2:
        assert time.monotonic() < deadline, records
        await asyncio.sleep(0.2)
    assert sorted((r["claimed_id"], r["producer"]) for r in records) == [
        ("forged-1", rogue),
        ("forged-2", None),
    ]
    assert {r["chain"] for r in records} == {"_security"}
    assert {"forged-1", "forged-2"}.isdisjoint(recorded_ids(system.database_url))
    for consumer in CONSUMERS:
        assert system.queue_depth(f"blume.share.{consumer}.dlq") == 2, consumer
    assert system.queue_depth("blume.share.audit_sink.dlq") == 0
    assert CHOSEN_ADDRESS not in system.logs()
