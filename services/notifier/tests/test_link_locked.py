"""share.link.locked: the sender is emailed, once, that their link locked itself after too
many wrong sign-in codes and that only a new share helps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import Locale, Recipient, ShareLinkLocked
from blume_runtime.settings import Settings

from .mail import bodies, received
from .test_service import FakeMailer

SHARE_ID = "shr_" + "7" * 32


def locked_event(locale: Locale = "en-CA", event_id: str = "lock-1") -> CloudEvent[Any]:
    return CloudEvent[ShareLinkLocked](
        id=event_id,
        source="/blume-share/access_gateway",
        type="share.link.locked",
        time=datetime.now(UTC),
        tenantid="demo-hospital",
        correlationid="corr-1",
        data=ShareLinkLocked(
            share_id=SHARE_ID,
            link_id="lnk_" + "7" * 32,
            sender_name="Dr. Alice Smith",
            sender_email="alice@demo-hospital.example",
            recipient=Recipient(name="Dr. Bob Jones", email="bob.jones@clinic.example"),
            organisation="Demo Hospital",
            locale=locale,
            locked_at=datetime.now(UTC),
        ),
    )


async def test_the_sender_is_told_once_that_the_link_is_locked(
    settings: Settings, make_pipeline: Any
) -> None:
    """One email to the sender's address, naming the recipient, with no link in it; the
    sent event says link_locked, which no share state or accounting takes for a share."""
    mailer = FakeMailer()
    pipeline = make_pipeline(settings, mailer)
    await pipeline.deliver(locked_event())
    await pipeline.deliver(locked_event(event_id="lock-2"))
    [message] = map(received, mailer.sent)
    assert message["To"].addresses[0].addr_spec == "alice@demo-hospital.example"
    assert message["Subject"] == "The link you sent to Dr. Bob Jones is locked"
    content = bodies(message)
    assert "share it again" in content
    assert "http" not in content
    [sent] = pipeline.events()
    assert sent["type"] == "share.notification.sent"
    assert sent["data"]["purpose"] == "link_locked"


@pytest.mark.parametrize("locale", ["en-CA", "fr-CA"])
async def test_the_lock_email_is_in_the_links_locale(
    settings: Settings, make_pipeline: Any, locale: Locale
) -> None:
    """French links get the French email."""
    mailer = FakeMailer()
    await make_pipeline(settings, mailer).deliver(locked_event(locale))
    [message] = map(received, mailer.sent)
    assert message["Content-Language"] == locale
    assert ("verrouillé" in message["Subject"]) is (locale == "fr-CA")
