"""share.sender.notification.requested: the sender is told, once per share and occasion,
what became of the share, in the request's language, with nothing of the patient or study."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import Locale, SenderNotificationRequested, SenderOccasion
from blume_runtime.settings import Settings

from .mail import bodies, received
from .test_service import FakeMailer

SHARE_ID = "shr_" + "5" * 32


def notice_event(
    occasion: SenderOccasion = "rejected",
    reason: str | None = "expiry_exceeds_policy",
    locale: Locale = "en-CA",
    event_id: str = "notice-1",
) -> CloudEvent[Any]:
    return CloudEvent[SenderNotificationRequested](
        id=event_id,
        source="/blume-share/share_dispatcher",
        type="share.sender.notification.requested",
        time=datetime.now(UTC),
        tenantid="demo-hospital",
        correlationid="corr-1",
        data=SenderNotificationRequested(
            share_id=SHARE_ID,
            occasion=occasion,
            reason=reason,
            sender_name="Dr. Alice Smith",
            sender_email="alice@demo-hospital.example",
            recipient_hint="b***@clinic.example",
            locale=locale,
        ),
    )


async def test_a_rejection_is_told_once_with_the_reason_in_words(
    settings: Settings, make_pipeline: Any
) -> None:
    """One email to the sender naming the share and the reason in words; a redelivery of the
    same notice (another event id) sends nothing more; the Message-ID derives from the share
    and the occasion."""
    mailer = FakeMailer()
    pipeline = make_pipeline(settings, mailer)
    await pipeline.deliver(notice_event())
    await pipeline.deliver(notice_event(event_id="notice-2"))
    [message] = map(received, mailer.sent)
    assert message["To"].addresses[0].addr_spec == "alice@demo-hospital.example"
    assert message["Subject"] == f"Your share {SHARE_ID} was not sent"
    assert message["Message-ID"] == f"<{SHARE_ID}.sender-rejected@blume-share.example>"
    content = bodies(message)
    assert "longer than your organisation allows" in content
    assert "http" not in content
    [sent] = pipeline.events()
    assert (sent["data"]["purpose"], sent["data"]["addressee"]) == ("sender_notice", "sender")


@pytest.mark.parametrize(
    ("occasion", "reason", "locale", "subject", "words"),
    [
        ("failed", "smtp_rejected", "en-CA", "could not be completed", "refused the email"),
        ("revoked", "consent_directive", "en-CA", "was revoked", "consent directive"),
        ("first_access", None, "en-CA", "was opened", "b***@clinic.example"),
        ("rejected", "invalid_recipient_email", "fr-CA", "pas été envoyé", "pas valide"),
        ("revoked", "consent_directive", "fr-CA", "a été révoqué", "directive de consentement"),
        ("first_access", None, "fr-CA", "a été ouvert", "première fois"),
    ],
)
async def test_each_occasion_in_each_locale(
    settings: Settings,
    make_pipeline: Any,
    occasion: SenderOccasion,
    reason: str | None,
    locale: Locale,
    subject: str,
    words: str,
) -> None:
    """Failure, revocation and first access, in en-CA and fr-CA, each say what happened."""
    mailer = FakeMailer()
    await make_pipeline(settings, mailer).deliver(notice_event(occasion, reason, locale))
    [message] = map(received, mailer.sent)
    assert subject in message["Subject"]
    assert message["Content-Language"] == locale
    assert words in bodies(message)
    occasion_slug = occasion.replace("_", "-")
    assert message["Message-ID"] == f"<{SHARE_ID}.sender-{occasion_slug}@blume-share.example>"
