"""Notifier test data and harness.

Data: a link-issued share as the link issuer emits it, sealed link and all. Harness: the
notifier service behind the real ``Worker`` and ``OutboxRelay`` on a migrated SQLite
database, with a transport that records what is published and a delivery that records how
the message was settled (ack, retry, dead-letter).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pytest
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import Locale, Recipient, Sender, ShareLinkIssued
from blume_notifier import service as notifier_service
from blume_notifier.mailer import Mailer
from blume_notifier.models import Notification
from blume_runtime.db import Database, OutboxMessage
from blume_runtime.outbox import OutboxRelay
from blume_runtime.sealing import Sealer
from blume_runtime.settings import Settings
from blume_runtime.testing import FakeDelivery, RecordingTransport
from blume_runtime.worker import Worker
from cryptography.fernet import Fernet
from sqlmodel import select

SHARE_ID = "shr_" + "0123456789abcdef" * 2
LINK_ID = "lnk_" + "fedcba9876543210" * 2
LINK = "https://share.demo-hospital.example/s/" + "Tk9U-aGVyZV9yZWFsbHlfYV90b2tlbl9ub3Rfd2Vh"
RECIPIENT_EMAIL = "bob.jones@clinic.example"
SENDER_EMAIL = "alice@demo-hospital.example"
MESSAGE = "Please review before Friday's consult."
EXPIRES_AT = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)
MAIL_FROM = "Blume Share <no-reply@blume-share.example>"


class IssuedFactory(Protocol):
    def __call__(
        self,
        *,
        locale: Locale = ...,
        message: str | None = ...,
        share_id: str = ...,
        organisation: str = ...,
    ) -> ShareLinkIssued: ...


class EventFactory(Protocol):
    def __call__(
        self, data: ShareLinkIssued, *, event_id: str = ...
    ) -> CloudEvent[ShareLinkIssued]: ...


@pytest.fixture
def link() -> str:
    """The recipient link the link issuer sealed into the event."""
    return LINK


@pytest.fixture
def sealing_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def settings(state_dir: Path, sealing_key: str) -> Settings:
    """Embedded-default settings with every value the notifier reads given explicitly."""
    return Settings(
        state_dir=state_dir,
        token_sealing_key=sealing_key,
        smtp_url=None,
        mail_from=MAIL_FROM,
        smtp_timeout_seconds=5.0,
        max_attempts=5,
    )


@pytest.fixture
def make_issued(settings: Settings) -> IssuedFactory:
    """``share.link.issued`` data with the link sealed under the test key."""
    sealer = Sealer.from_settings(settings)

    def factory(
        *,
        locale: Locale = "en-CA",
        message: str | None = MESSAGE,
        share_id: str = SHARE_ID,
        organisation: str = "Demo Hospital",
    ) -> ShareLinkIssued:
        return ShareLinkIssued(
            share_id=share_id,
            link_id=LINK_ID,
            token_fingerprint="sha256:" + "ab" * 16,
            sealed_link=sealer.seal(LINK),
            expires_at=EXPIRES_AT,
            recipient=Recipient(name="Dr. Bob Jones", email=RECIPIENT_EMAIL),
            sender=Sender(user_id="u-123", name="Dr. Alice Smith", email=SENDER_EMAIL),
            organisation=organisation,
            message=message,
            locale=locale,
        )

    return factory


@pytest.fixture
def make_event() -> EventFactory:
    def factory(data: ShareLinkIssued, *, event_id: str = "evt-1") -> CloudEvent[ShareLinkIssued]:
        return CloudEvent[ShareLinkIssued](
            id=event_id,
            source="/test",
            type="share.link.issued",
            time=datetime(2026, 11, 25, 14, 0, tzinfo=UTC),
            tenantid="demo-hospital",
            correlationid="corr-1",
            data=data,
        )

    return factory


class Pipeline:
    """The notifier service behind a real ``Worker`` and ``OutboxRelay``."""

    def __init__(self, settings: Settings, db: Database, mailer: Mailer | None) -> None:
        self.db = db
        self.transport = RecordingTransport()
        self.relay = OutboxRelay(db, self.transport)
        service = notifier_service.build(settings, mailer=mailer)
        self.worker = Worker(service, db, self.relay, settings)

    async def deliver(self, event: CloudEvent[Any], attempt: int = 1, **options: Any) -> str | None:
        """Run one delivery through the worker; return how it was settled (the delivery
        itself is ``last``). ``options`` go to ``FakeDelivery.of``."""
        self.last = FakeDelivery.of(event, attempt=attempt, **options)
        await self.worker(self.last)
        return self.last.settlement

    def events(self) -> list[dict[str, Any]]:
        """The CloudEvents published so far, as JSON documents."""
        return [json.loads(message.body) for message in self.transport.published]

    async def notifications(self) -> list[Notification]:
        async with self.db.transaction() as session:
            return list((await session.exec(select(Notification))).all())

    async def outbox(self) -> list[OutboxMessage]:
        """Rows still waiting to be published (published rows are deleted in bulk first)."""
        await self.relay.forget_published()
        async with self.db.transaction() as session:
            return list((await session.exec(select(OutboxMessage))).all())


class PipelineFactory(Protocol):
    def __call__(self, settings: Settings, mailer: Mailer | None = ...) -> Pipeline: ...


@pytest.fixture
def make_pipeline(sqlite_db: Database) -> PipelineFactory:
    """Pipelines on the migrated SQLite database (``mailer=None``: the one settings choose)."""

    def factory(settings: Settings, mailer: Mailer | None = None) -> Pipeline:
        return Pipeline(settings, sqlite_db, mailer)

    return factory
