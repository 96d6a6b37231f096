"""One email per share and kind when two events for it are handled at the same time, or when
the database is lost between the server's acceptance and the commit that records it.

On real PostgreSQL, where deliveries run concurrently on their own connections (SQLite's
single writer would serialise them and hide the race).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email.message import Message
from urllib.parse import urlsplit

import psycopg
import pytest
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import ShareLinkIssued
from blume_notifier.mailer import MailUnavailable
from blume_runtime.db import Database, utcnow
from blume_runtime.settings import Settings
from blume_runtime.testing import FakeDelivery

from .conftest import EventFactory, IssuedFactory, Pipeline

pytestmark = pytest.mark.integration


class SlowMailer:
    """Accepts each email only when the test lets it, so that a send can be held in flight."""

    def __init__(self, failures: int = 0) -> None:
        self.attempts = 0
        self.sent: list[Message] = []
        self.in_flight = asyncio.Event()
        self.release = asyncio.Event()
        self._failures = failures

    async def send(self, message: Message) -> None:
        self.attempts += 1
        self.in_flight.set()
        await self.release.wait()
        if self._failures:
            self._failures -= 1
            raise MailUnavailable("421 4.3.2 try again later")
        self.sent.append(message)


@pytest.fixture
async def postgres_db(migrated_database_url: str) -> AsyncIterator[Database]:
    db = Database(migrated_database_url)
    yield db
    await db.dispose()


async def settle(pipeline: Pipeline, event: CloudEvent[ShareLinkIssued]) -> str | None:
    """Run one delivery through the pipeline's worker; how it was settled (``Pipeline.deliver``
    keeps only its last delivery, which two at once would overwrite)."""
    delivery = FakeDelivery.of(event)
    await pipeline.worker(delivery)
    return delivery.settlement


async def one_email_twice_at_once(
    pipeline: Pipeline, mailer: SlowMailer, issued: ShareLinkIssued, make_event: EventFactory
) -> list[str | None]:
    """Deliver ``issued`` under two event ids, the second while the first is sending; give
    the second the time to reach its claim (it must not finish meanwhile), then let the
    first send. How each was settled, first then second."""
    first = asyncio.create_task(settle(pipeline, make_event(issued, event_id="evt-first")))
    await asyncio.wait_for(mailer.in_flight.wait(), 10)
    second = asyncio.create_task(settle(pipeline, make_event(issued, event_id="evt-replayed")))
    await asyncio.sleep(0.5)
    assert not second.done(), "the second delivery did not wait for the first one's claim"
    mailer.release.set()
    return list(await asyncio.wait_for(asyncio.gather(first, second), 10))


async def test_two_events_for_one_email_handled_at_once_send_it_once(
    settings: Settings,
    postgres_db: Database,
    make_issued: IssuedFactory,
    make_event: EventFactory,
) -> None:
    """A replayed share.link.issued (new event id) handled while the first is still sending
    waits for the first's transaction, then sends nothing: one email, one sent event."""
    mailer = SlowMailer()
    pipeline = Pipeline(settings, postgres_db, mailer)
    issued = make_issued()
    settled = await one_email_twice_at_once(pipeline, mailer, issued, make_event)

    assert settled == ["ack", "ack"]
    assert mailer.attempts == 1
    assert [event["type"] for event in pipeline.events()] == ["share.notification.sent"]
    (notification,) = await pipeline.notifications()
    assert notification.message_id == mailer.sent[0]["Message-ID"]


async def test_a_waiting_event_sends_the_email_when_the_first_attempt_fails(
    settings: Settings,
    postgres_db: Database,
    make_issued: IssuedFactory,
    make_event: EventFactory,
) -> None:
    """When the first attempt's SMTP server is unavailable, its claim goes with its rollback,
    and the event that waited on it sends the email: none is lost to the claim."""
    mailer = SlowMailer(failures=1)
    pipeline = Pipeline(settings, postgres_db, mailer)
    issued = make_issued()
    settled = await one_email_twice_at_once(pipeline, mailer, issued, make_event)

    assert settled == ["retry", "ack"]
    assert mailer.attempts == 2
    assert len(mailer.sent) == 1
    sent = [event for event in pipeline.events() if event["type"] == "share.notification.sent"]
    assert len(sent) == 1
    assert len(await pipeline.notifications()) == 1


class MailerThatLosesTheDatabase:
    """Accepts the email, then terminates the notifier's database connections: the record
    of a send fails after the server took it, as when PostgreSQL restarts at that moment."""

    def __init__(self, admin_url: str, database: str) -> None:
        self.sent: list[Message] = []
        self._admin_url = admin_url
        self._database = database

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if len(self.sent) == 1:
            await asyncio.to_thread(self._terminate_connections)

    def _terminate_connections(self) -> None:
        with psycopg.connect(self._admin_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (self._database,),
            )


async def test_an_email_whose_record_was_lost_with_the_database_is_not_sent_again(
    settings: Settings,
    postgres_db: Database,
    migrated_database_url: str,
    postgres_admin_url: str,
    make_issued: IssuedFactory,
    make_event: EventFactory,
) -> None:
    """The database connection dies after the SMTP server accepted the email: the delivery
    is retried, and the retry records the email (with the moment it was accepted) without
    sending it a second time."""
    database = urlsplit(migrated_database_url).path.lstrip("/")
    mailer = MailerThatLosesTheDatabase(postgres_admin_url, database)
    pipeline = Pipeline(settings, postgres_db, mailer)
    event = make_event(make_issued())

    assert await pipeline.deliver(event) == "retry"
    assert await pipeline.notifications() == []
    accepted = utcnow()
    assert await pipeline.deliver(event, attempt=2) == "ack"

    assert len(mailer.sent) == 1
    (sent,) = [event for event in pipeline.events() if event["type"] == "share.notification.sent"]
    (notification,) = await pipeline.notifications()
    assert notification.sent_at < accepted
    assert sent["data"]["accepted_at"] == notification.sent_at.isoformat().replace("+00:00", "Z")
