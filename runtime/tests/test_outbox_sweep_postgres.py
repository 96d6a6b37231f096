"""The outbox sweep on real PostgreSQL: rows stay locked until published and deleted."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from blume_runtime.app import Runtime
from blume_runtime.broker_users import service_names
from blume_runtime.db import Database, OutboxMessage, utcnow
from blume_runtime.outbox import OutboxRelay
from blume_runtime.service import Service
from blume_runtime.settings import Settings
from blume_runtime.testing import RecordingTransport
from blume_runtime.transport import OutgoingMessage
from sqlmodel import select

pytestmark = pytest.mark.integration

ROWS = 60


class SlowBroker(RecordingTransport):
    """Confirms each publish after a pause, long enough for another sweeper to look."""

    async def publish(self, message: OutgoingMessage) -> None:
        await asyncio.sleep(0.05)
        await super().publish(message)


@pytest.fixture
async def postgres(migrated_database_url: str) -> AsyncIterator[Database]:
    database = Database(migrated_database_url, schema="link_issuer")
    yield database
    await database.dispose()


async def stranded_rows(db: Database, count: int) -> None:
    async with db.transaction() as session:
        for number in range(count):
            session.add(
                OutboxMessage(
                    event_id=f"evt-{number}",
                    routing_key="share.completed",
                    body=b"{}",
                    created_at=utcnow() - timedelta(minutes=1),
                )
            )


async def test_two_sweepers_never_publish_the_same_row_twice(postgres: Database) -> None:
    """Two processes sweeping the same outbox at once publish each row exactly once."""
    await stranded_rows(postgres, ROWS)
    brokers = [SlowBroker(), SlowBroker()]
    sweepers = [OutboxRelay(postgres, broker, batch_size=10) for broker in brokers]

    async def sweep_until_empty(relay: OutboxRelay) -> None:
        while await relay.sweep(older_than=timedelta(0)):
            pass

    await asyncio.gather(*(sweep_until_empty(relay) for relay in sweepers))

    published = Counter(m.message_id for broker in brokers for m in broker.published)
    assert sorted(published) == sorted(f"evt-{number}" for number in range(ROWS))
    assert max(published.values()) == 1
    assert all(broker.published for broker in brokers), "both sweepers took a share"
    async with postgres.transaction() as session:
        assert (await session.exec(select(OutboxMessage))).all() == []


async def test_a_row_the_broker_refused_stays_for_the_next_sweep(postgres: Database) -> None:
    """Refused rows are kept (and the refusal raised); confirmed ones are gone."""
    await stranded_rows(postgres, 3)
    broker = RecordingTransport()
    broker.fail = True
    relay = OutboxRelay(postgres, broker)
    with pytest.raises(ConnectionError):
        await relay.sweep(older_than=timedelta(0))
    broker.fail = False
    assert await relay.sweep(older_than=timedelta(0)) == 3
    assert sorted(m.message_id for m in broker.published) == ["evt-0", "evt-1", "evt-2"]


async def test_with_a_user_per_service_a_sweep_leaves_other_producers_rows(
    postgres: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a broker user per service, the link issuer's process sweeps only what the link
    issuer produces; the dispatcher's stranded events wait for a dispatcher's sweep (under
    the link issuer's user the broker or every consumer would refuse them)."""
    async with postgres.transaction() as session:
        for event_id, routing_key in [
            ("evt-link", "share.link.issued"),
            ("evt-done", "share.completed"),
        ]:
            session.add(
                OutboxMessage(
                    event_id=event_id,
                    routing_key=routing_key,
                    body=b"{}",
                    created_at=utcnow() - timedelta(minutes=1),
                )
            )
    users = ",".join(f"{name}={name}" for name in sorted(service_names()))
    monkeypatch.setenv("BLUME_BROKER_USERS", users)
    monkeypatch.setenv("BLUME_AMQP_URL", "amqp://link_issuer:secret@127.0.0.1:5672/blume")
    runtime = Runtime(Settings(), [link_issuer_service()], postgres)
    broker = RecordingTransport()
    relay = runtime.relay_for("link_issuer")
    relay._transport = broker
    assert await relay.sweep(older_than=timedelta(0)) == 1
    assert [m.message_id for m in broker.published] == ["evt-link"]
    async with postgres.transaction() as session:
        left = (await session.exec(select(OutboxMessage.event_id))).all()
    assert left == ["evt-done"]


def link_issuer_service() -> Service:
    """A service named link_issuer with no handlers: only its name matters to the sweep."""
    return Service("link_issuer")
