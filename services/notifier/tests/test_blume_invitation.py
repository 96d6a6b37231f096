"""The "Step into Blume" email: the patient's locale, the portal link, nothing about the study."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import Locale, ShareBlumePublished
from blume_notifier.render import build_blume_email
from blume_runtime.settings import Settings
from blume_runtime.testing import FakeMailer

from .mail import bodies, received

SHARE_ID = "shr_" + "ab" * 16
ENTRY_ID = "ent_" + "cd" * 16
PORTAL_LINK = f"https://portal.example/blume/studies/{ENTRY_ID}"


def published(locale: Locale = "en-CA", notifications: bool = True) -> ShareBlumePublished:
    return ShareBlumePublished(
        share_id=SHARE_ID,
        blume_patient_id="bp-0001",
        entry_id=ENTRY_ID,
        newly_published=True,
        email_notifications=notifications,
        patient_email="jane.doe@mail.example",
        locale=locale,
    )


@pytest.mark.parametrize(
    ("locale", "button", "subject"),
    [
        ("en-CA", "Step into Blume", "A new imaging study is available in Blume"),
        ("fr-CA", "Entrer dans Blume", "Un nouvel examen d'imagerie est disponible dans Blume"),
    ],
)
def test_invitation_in_the_patients_locale(locale: Locale, button: str, subject: str) -> None:
    """Both locales: the button, the portal link in both parts, a study-free subject."""
    message = received(
        build_blume_email(
            published(locale),
            PORTAL_LINK,
            mail_from="Blume <no-reply@blume.example>",
            message_id=f"<{SHARE_ID}.blume@blume.example>",
        )
    )
    assert message["Subject"] == subject
    assert message["To"] == "jane.doe@mail.example"
    assert message["Content-Language"] == locale
    html = message.get_body(("html",))
    text = message.get_body(("plain",))
    assert html is not None
    assert text is not None
    assert button in html.get_content()
    assert f'href="{PORTAL_LINK}"' in html.get_content()
    assert PORTAL_LINK in text.get_content()


def test_invitation_says_nothing_about_the_study() -> None:
    """No patient or study detail can reach the email: the template has none to show."""
    message = build_blume_email(
        published(),
        PORTAL_LINK,
        mail_from="Blume <no-reply@blume.example>",
        message_id=f"<{SHARE_ID}.blume@blume.example>",
        sent_at=datetime.now(UTC),
    )
    content = bodies(message) + str(message["Subject"])
    for detail in ("bp-0001", "MRN-0001", "CT CHEST", "1.2.840", "DOE^JANE"):
        assert detail not in content


def event(data: ShareBlumePublished, event_id: str = "pub-1") -> CloudEvent[Any]:
    return CloudEvent[ShareBlumePublished](
        id=event_id,
        source="/blume-share/blume_publisher",
        type="share.blume.published",
        time=datetime.now(UTC),
        tenantid="demo-hospital",
        correlationid="corr-1",
        data=data,
    )


async def test_invitation_sent_once(settings: Settings, make_pipeline: Any) -> None:
    """The same published event twice sends one email to the portal link."""
    mailer = FakeMailer()
    pipeline = make_pipeline(
        Settings.model_validate(
            {**settings.model_dump(), "portal_base_url": "https://portal.example/blume/"}
        ),
        mailer,
    )
    await pipeline.deliver(event(published()))
    await pipeline.deliver(event(published(), event_id="pub-2"))
    [message] = mailer.sent
    assert PORTAL_LINK in bodies(message)
    assert [e["type"] for e in pipeline.events()] == ["share.notification.sent"]


async def test_notifications_off_suppresses_the_email(
    settings: Settings, make_pipeline: Any
) -> None:
    """With email notifications off nothing is sent and suppression is an event."""
    mailer = FakeMailer()
    pipeline = make_pipeline(settings, mailer)
    await pipeline.deliver(event(published(notifications=False)))
    assert mailer.attempts == 0
    [suppressed] = pipeline.events()
    assert suppressed["type"] == "share.notification.suppressed"
    assert suppressed["data"]["reason"] == "patient_preference"


def test_sign_in_code_email_keeps_the_code_out_of_the_subject() -> None:
    """The code is in both bodies, never in the subject; the address is the invited one."""
    from datetime import timedelta

    from blume_contracts.events import Recipient, ShareOtpRequested
    from blume_notifier.render import build_code_email

    request = ShareOtpRequested(
        share_id=SHARE_ID,
        link_id="lnk_" + "ef" * 16,
        challenge_id="otp_" + "01" * 16,
        recipient=Recipient(name="Dr. Bob Jones", email="bob@clinic.example"),
        organisation="Demo Hospital",
        locale="fr-CA",
        sealed_code="unused-here",
        expires_at=datetime.now(UTC) + timedelta(minutes=10),
    )
    message = received(
        build_code_email(
            request,
            "493817",
            mail_from="Blume <no-reply@blume.example>",
            message_id=f"<{SHARE_ID}.otp@blume.example>",
        )
    )
    assert "493817" not in str(message["Subject"])
    assert message["To"].addresses[0].addr_spec == "bob@clinic.example"
    assert bodies(message).count("493817") == 2
    assert "10 minutes" in bodies(message)


async def test_the_step_into_blume_email_is_recorded_as_sent_to_the_patient(
    settings: Settings, make_pipeline: Any
) -> None:
    """The sent event names the patient as addressee, which keeps it out of the accounting
    of disclosures to third parties."""
    pipeline = make_pipeline(settings, FakeMailer())
    await pipeline.deliver(event(published()))
    [sent] = pipeline.events()
    assert sent["data"]["addressee"] == "patient"
    assert sent["data"]["purpose"] == "share"


def test_item_14_the_blume_email_offers_one_click_unsubscribe() -> None:
    """Issue 12 item 14: List-Unsubscribe names the https URL (its token opaque) and
    List-Unsubscribe-Post says One-Click (RFC 8058); without a URL there are neither."""
    url = "https://share.example/unsubscribe/gAAAAABopaque"
    with_header = build_blume_email(
        published(),
        PORTAL_LINK,
        mail_from="Blume <no-reply@blume.example>",
        message_id="<m@x>",
        unsubscribe=url,
    )
    assert with_header["List-Unsubscribe"] == f"<{url}>"
    assert with_header["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    without = build_blume_email(
        published(), PORTAL_LINK, mail_from="Blume <no-reply@blume.example>", message_id="<m@x>"
    )
    assert without["List-Unsubscribe"] is None
