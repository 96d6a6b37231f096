"""A forged internal event under the shipped broker definitions: real RabbitMQ, PostgreSQL
and SMTP, every worker in a process of its own under its own broker user.

Issue 8, defect 5, as production runs: ``blume-share broker definitions`` imported into the
test's vhost (users suffixed, since users are global to a node), ``BLUME_BROKER_USERS``
naming them all. The forger is the shipped upstream-client user ``omegaai``, the account an
outside system holds. Its topic permission refuses a direct ``share.blume.published``; an
exchange of its own bound to ``blume.share`` gets past that topic check (RabbitMQ checks
topic permissions on the exchange published to, not on the bindings a message crosses), so
the guarantee rests on every consumer checking the broker-validated ``user_id``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import psycopg
import pytest
from blume_contracts.envelope import RawEvent
from blume_contracts.ids import share_id_for
from cryptography.fernet import Fernet

from runtime.tests.rabbit_support import (
    BrokerUsersOnVhost,
    depth,
    queue_rows,
    refused,
    shipped_users,
    until,
)
from tests.conftest import PUBLIC_BASE_URL, blume_share, free_port, request_event
from tests.test_forged_events import CHOSEN_ADDRESS, forged_publication
from tests.test_forged_events_rabbitmq import recorded_ids, security_records

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

WORKERS = ("share_dispatcher", "link_issuer", "blume_publisher", "notifier", "audit_sink")
CONSUMERS_OF_PUBLISHED = ("notifier", "share_dispatcher")
"""The workers whose queues bind share.blume.published: not the audit sink's (its producer
stages it, and each consumer that refuses a forgery stages the security record)."""
DETOUR = "omegaai.detour"


@pytest.fixture
async def users(amqp_url: str) -> AsyncIterator[BrokerUsersOnVhost]:
    async with shipped_users(amqp_url) as shipped:
        yield shipped


@pytest.fixture
def workers(
    users: BrokerUsersOnVhost,
    amqp_url: str,
    database_url: str,
    smtp_server: Any,
    tmp_path: Path,
) -> Iterator[Path]:
    """One ``blume-share run <service>`` per worker, each connected as its own user."""
    names = [*WORKERS, "access_gateway", "ops"]
    broker_users = ",".join(f"{name}={users.user(name)}" for name in names)
    base = {key: value for key, value in os.environ.items() if not key.startswith("BLUME_")}
    base.update(
        BLUME_DATABASE_URL=database_url,
        BLUME_SMTP_URL=smtp_server.url,
        BLUME_PUBLIC_BASE_URL=PUBLIC_BASE_URL,
        BLUME_TOKEN_SEALING_KEY=Fernet.generate_key().decode(),
        BLUME_RETRY_DELAY_SECONDS="1",
        BLUME_OUTBOX_POLL_SECONDS="0.5",
        BLUME_LOG_FORMAT="json",
        BLUME_STATE_DIR=str(tmp_path / "state"),
        BLUME_OPS_PORT="0",
        BLUME_BROKER_USERS=broker_users,
        BLUME_AMQP_URL=users.url("share_dispatcher"),
    )
    migrated = blume_share("migrate", env=base)
    assert migrated.returncode == 0, migrated.stderr
    log_path = tmp_path / "workers.log"
    processes: list[subprocess.Popen[bytes]] = []
    with log_path.open("wb") as log:
        for name in WORKERS:
            env = {**base, "BLUME_AMQP_URL": users.url(name), "BLUME_HTTP_PORT": str(free_port())}
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "blume_share", "run", name],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        yield log_path
    finally:
        for process in processes:
            process.terminate()
        codes = [process.wait(timeout=45) for process in processes]
        assert codes == [0] * len(WORKERS), log_path.read_text(errors="replace")[-4000:]


def logs(log_path: Path) -> str:
    return log_path.read_text(errors="replace")


async def attached(amqp_url: str, log_path: Path) -> None:
    """Wait until every worker's queue has a consumer (each worker declares its own)."""

    def every_queue_consumed() -> bool:
        rows = queue_rows(amqp_url, "consumers")
        return all(int(rows.get(f"blume.share.{name}", ["0"])[0] or 0) >= 1 for name in WORKERS)

    try:
        await until(every_queue_consumed, within=90, every=0.5)
    except TimeoutError:
        pytest.fail(f"workers did not attach:\n{logs(log_path)[-4000:]}")


async def publish_via_detour(client_url: str, client_user: str, event: dict[str, Any]) -> None:
    """The upstream client's way round its topic permission: its own exchange, bound to
    ``blume.share``, which the broker lets it do with the shipped permissions."""
    connection = await aio_pika.connect(client_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        detour = await channel.declare_exchange(DETOUR, aio_pika.ExchangeType.FANOUT)
        shared = await channel.get_exchange("blume.share", ensure=False)
        await shared.bind(detour, routing_key="")
        await detour.publish(
            aio_pika.Message(
                json.dumps(event).encode(),
                content_type="application/cloudevents+json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=event["id"],
                user_id=client_user,
            ),
            routing_key=event["type"],
        )


async def publish_as_client(client_url: str, event: dict[str, Any]) -> None:
    connection = await aio_pika.connect(client_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        shared = await channel.get_exchange("blume.share", ensure=False)
        await shared.publish(
            aio_pika.Message(
                json.dumps(event).encode(),
                content_type="application/cloudevents+json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=event["id"],
            ),
            routing_key=event["type"],
        )


def share_state(database_url: str, share_id: str) -> str | None:
    with psycopg.connect(database_url) as connection:
        row = connection.execute(
            "SELECT state FROM dispatcher_shares WHERE share_id = %s", (share_id,)
        ).fetchone()
    return None if row is None else str(row[0])


async def test_a_forged_publication_by_the_upstream_client_user_is_refused_everywhere(
    users: BrokerUsersOnVhost,
    workers: Path,
    amqp_url: str,
    database_url: str,
    smtp_server: Any,
) -> None:
    """The shipped ``omegaai`` user forges share.blume.published for an address of its
    choosing: the broker refuses the direct publish; the detour through an exchange of its
    own reaches every consumer, which dead-letters it as ``untrusted_producer``; no email
    goes to the chosen address, the audit store holds one security record naming the
    client's user (never the forged event), and a genuine request from the same user still
    completes."""
    await attached(amqp_url, workers)
    client, client_user = users.url("omegaai"), users.user("omegaai")

    refusal = await refused(client, "blume.share", "share.blume.published", user_id=client_user)
    assert "ACCESS_REFUSED" in refusal

    forged = forged_publication("forged-by-client")
    await publish_via_detour(client, client_user, forged)
    genuine = request_event()
    await publish_as_client(client, genuine)

    share_id = share_id_for(RawEvent.model_validate(genuine))
    await until(lambda: share_state(database_url, share_id) == "completed", within=60)
    deadline = time.monotonic() + 30
    while not (records := security_records(database_url)):
        assert time.monotonic() < deadline, logs(workers)[-4000:]
        await asyncio.sleep(0.2)
    assert [(r["claimed_id"], r["producer"], r["chain"]) for r in records] == [
        ("forged-by-client", client_user, "_security")
    ]
    assert "forged-by-client" not in recorded_ids(database_url)

    recipients = [address.addr_spec for m in smtp_server.messages for address in m["To"].addresses]
    assert recipients == ["bob.jones@clinic.example"]
    for consumer in CONSUMERS_OF_PUBLISHED:
        assert await depth(amqp_url, f"blume.share.{consumer}.dlq") == 1, consumer
    assert await depth(amqp_url, "blume.share.audit_sink.dlq") == 0
    assert CHOSEN_ADDRESS not in logs(workers)
