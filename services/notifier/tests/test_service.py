"""The notifier's handler, driven through the real worker pipeline on a migrated SQLite database,
with a fake mailer standing in for SMTP (the pipeline harness is in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import jinja2
import pytest
import structlog
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import ShareLinkIssued
from blume_contracts.sensitivity import fingerprint
from blume_notifier import service as notifier_service
from blume_notifier.mailer import MailRejected, MailUnavailable
from blume_runtime.settings import Settings
from blume_runtime.testing import FakeMailer
from blume_runtime.transport import DeadLetterCause
from cryptography.fernet import Fernet
from pydantic import SecretStr

from .mail import received

MakeIssued = Callable[..., ShareLinkIssued]
MakeEvent = Callable[..., CloudEvent[ShareLinkIssued]]
MakePipeline = Callable[..., Any]


async def test_link_issued_sends_the_email_and_emits_sent(
    settings: Settings,
    make_pipeline: MakePipeline,
    make_issued: MakeIssued,
    make_event: MakeEvent,
    link: str,
) -> None:
    """A link-issued event sends one email to the recipient and emits share.notification.sent."""
    mailer = FakeMailer()
    pipeline = make_pipeline(settings, mailer)
    issued = make_issued()
    assert await pipeline.deliver(make_event(issued)) == "ack"

    (email,) = map(received, mailer.sent)
    assert email["To"].addresses[0].addr_spec == issued.recipient.email
    text = email.get_body(("plain",))
    assert isinstance(text, EmailMessage)
    assert link in text.get_content()
    (sent,) = pipeline.events()
    assert sent["type"] == "share.notification.sent"
    assert sent["correlationid"] == "corr-1"
    assert sent["data"]["share_id"] == issued.share_id
    assert sent["data"]["recipient_email"] == issued.recipient.email
    assert sent["data"]["message_id"] == email["Message-ID"]
    assert sent["data"]["channel"] == "email"


async def test_notification_row_keeps_a_fingerprint_not_the_address(
    settings: Settings, make_pipeline: MakePipeline, make_issued: MakeIssued, make_event: MakeEvent
) -> None:
    """The stored row identifies the recipient by fingerprint only; the address is not kept."""
    mailer = FakeMailer()
    pipeline = make_pipeline(settings, mailer)
    issued = make_issued()
    await pipeline.deliver(make_event(issued))

    (row,) = await pipeline.notifications()
    assert row.notification_key == f"{issued.share_id}:link"
    assert row.share_id == issued.share_id
    assert row.recipient_fingerprint == fingerprint("bob.jones@clinic.example")
    assert row.message_id == mailer.sent[0]["Message-ID"]
    assert "bob.jones" not in repr(row.model_dump())


async def test_same_event_delivered_twice_sends_one_email(
    settings: Settings, make_pipeline: MakePipeline, make_issued: MakeIssued, make_event: MakeEvent
) -> None:
    """A redelivery of the same event is acknowledged without a second email or event."""
    mailer = FakeMailer()
    pipeline = make_pipeline(settings, mailer)
    event = make_event(make_issued())
    assert await pipeline.deliver(event) == "ack"
    assert await pipeline.deliver(event, attempt=2) == "ack"

    assert len(mailer.sent) == 1
    assert len(pipeline.events()) == 1


async def test_new_event_for_an_already_emailed_share_sends_nothing(
    settings: Settings, make_pipeline: MakePipeline, make_issued: MakeIssued, make_event: MakeEvent
) -> None:
    """A second share.link.issued for the same share (new event id) sends and emits nothing."""
    mailer = FakeMailer()
    pipeline = make_pipeline(settings, mailer)
    issued = make_issued()
    assert await pipeline.deliver(make_event(issued, event_id="evt-1")) == "ack"
    assert await pipeline.deliver(make_event(issued, event_id="evt-replayed")) == "ack"

    assert mailer.attempts == 1
    assert len(pipeline.events()) == 1
    assert await pipeline.outbox() == []
    assert len(await pipeline.notifications()) == 1


async def test_different_shares_each_get_their_email(
    settings: Settings, make_pipeline: MakePipeline, make_issued: MakeIssued, make_event: MakeEvent
) -> None:
    """The once-per-share guard is per share: two shares mean two emails with distinct ids."""
    mailer = FakeMailer()
    pipeline = make_pipeline(settings, mailer)
    await pipeline.deliver(make_event(make_issued(share_id="shr_" + "1" * 32), event_id="e1"))
    await pipeline.deliver(make_event(make_issued(share_id="shr_" + "2" * 32), event_id="e2"))

    assert len({message["Message-ID"] for message in mailer.sent}) == 2
    assert len(await pipeline.notifications()) == 2


async def test_rejected_email_emits_failed_without_retry(
    settings: Settings, make_pipeline: MakePipeline, make_issued: MakeIssued, make_event: MakeEvent
) -> None:
    """An SMTP 5xx emits share.notification.failed (smtp_rejected) and is not retried."""
    mailer = FakeMailer(MailRejected("550 5.1.1 <bob.jones@clinic.example>: no such user"))
    pipeline = make_pipeline(settings, mailer)
    assert await pipeline.deliver(make_event(make_issued())) == "ack"

    (failed,) = pipeline.events()
    assert failed["type"] == "share.notification.failed"
    assert failed["data"]["reason"] == "smtp_rejected"
    assert "550 5.1.1" in failed["data"]["detail"]
    assert "bob.jones" not in failed["data"]["detail"]
    assert await pipeline.notifications() == []


def test_failure_detail_never_holds_the_recipient_address() -> None:
    """Whatever an error says, the detail names no recipient address, in any letter case."""
    error = RuntimeError("refused BOB.Jones@Clinic.example and cc carol@clinic.example")
    detail = notifier_service.failure_detail(error, "bob.jones@clinic.example")
    assert "bob.jones" not in detail.lower()
    assert "carol" not in detail
    assert detail.startswith("RuntimeError: refused [recipient]")


async def test_unavailable_smtp_is_retried_and_the_wait_announced_once(
    settings: Settings, make_pipeline: MakePipeline, make_issued: MakeIssued, make_event: MakeEvent
) -> None:
    """A transient SMTP failure schedules a retry, sends nothing and records no email; its
    first retry announces share.notification.delayed, later retries of that class do not."""
    pipeline = make_pipeline(settings, FakeMailer(MailUnavailable("connection refused")))
    event = make_event(make_issued())
    assert await pipeline.deliver(event) == "retry"
    assert pipeline.last.error_class == "smtp_unavailable"
    (delayed,) = pipeline.events()
    assert delayed["type"] == "share.notification.delayed"
    assert delayed["data"]["error_class"] == "smtp_unavailable"
    assert delayed["data"]["purpose"] == "share"

    since = datetime.fromisoformat(delayed["data"]["first_failed_at"])
    later = {"x-blume-error-class": "smtp_unavailable"}
    assert await pipeline.deliver(event, attempt=4, first_failed_at=since, headers=later) == (
        "retry"
    )
    assert len(pipeline.events()) == 1
    assert await pipeline.outbox() == []
    assert await pipeline.notifications() == []


async def test_an_smtp_outage_within_its_budget_never_fails_the_share(
    settings: Settings, make_pipeline: MakePipeline, make_issued: MakeIssued, make_event: MakeEvent
) -> None:
    """Two hours and fifty attempts into an outage (the old budget was 5 x 5 s), the email is
    still retried: no share.notification.failed, whatever the attempt count."""
    pipeline = make_pipeline(settings, FakeMailer(MailUnavailable("421 4.3.2 busy")))
    since = datetime.now(UTC) - timedelta(hours=2)
    later = {"x-blume-error-class": "smtp_unavailable"}
    outcome = await pipeline.deliver(
        make_event(make_issued()), attempt=50, first_failed_at=since, headers=later
    )
    assert outcome == "retry"
    assert pipeline.events() == []


async def test_an_smtp_outage_past_its_budget_is_dead_lettered_for_replay(
    settings: Settings, make_pipeline: MakePipeline, make_issued: MakeIssued, make_event: MakeEvent
) -> None:
    """Past the SMTP budget (24 h by default) the message is dead-lettered as exhausted, and
    the share is not failed: ops replay it once the server is back."""
    pipeline = make_pipeline(settings, FakeMailer(MailUnavailable("connection refused")))
    since = datetime.now(UTC) - timedelta(hours=25)
    assert await pipeline.deliver(make_event(make_issued()), first_failed_at=since) == (
        "dead_letter"
    )
    assert pipeline.last.cause is DeadLetterCause.EXHAUSTED
    assert pipeline.last.error_class == "smtp_unavailable"
    assert [event["type"] for event in pipeline.events()] == []


async def test_retry_after_an_outage_sends_once(
    settings: Settings, make_pipeline: MakePipeline, make_issued: MakeIssued, make_event: MakeEvent
) -> None:
    """When SMTP comes back, the retried delivery sends the email and emits sent once."""
    mailer = FakeMailer(MailUnavailable("connection refused"))
    pipeline = make_pipeline(settings, mailer)
    event = make_event(make_issued())
    assert await pipeline.deliver(event, attempt=1) == "retry"
    mailer.failure = None
    assert await pipeline.deliver(event, attempt=2, first_failed_at=datetime.now(UTC)) == "ack"

    assert len(mailer.sent) == 1
    types = [event["type"] for event in pipeline.events()]
    assert types == ["share.notification.delayed", "share.notification.sent"]


async def test_template_error_emits_failed(
    settings: Settings,
    make_pipeline: MakePipeline,
    make_issued: MakeIssued,
    make_event: MakeEvent,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken template emits share.notification.failed (template_error) and sends nothing."""

    def broken_template(*_args: object, **_kwargs: object) -> EmailMessage:
        raise jinja2.UndefinedError("'expires' is undefined")

    monkeypatch.setattr(notifier_service, "build_link_email", broken_template)
    mailer = FakeMailer()
    pipeline = make_pipeline(settings, mailer)
    assert await pipeline.deliver(make_event(make_issued())) == "ack"

    (failed,) = pipeline.events()
    assert failed["data"]["reason"] == "template_error"
    assert "'expires' is undefined" in failed["data"]["detail"]
    assert mailer.attempts == 0


async def test_link_sealed_with_an_unknown_key_is_retried_not_sent(
    settings: Settings, make_pipeline: MakePipeline, make_issued: MakeIssued, make_event: MakeEvent
) -> None:
    """A sealed link this worker cannot open (key not rolled out yet) is retried, never emailed."""
    other_keys = settings.model_copy(
        update={"token_sealing_key": SecretStr(Fernet.generate_key().decode())}
    )
    mailer = FakeMailer()
    pipeline = make_pipeline(other_keys, mailer)
    assert await pipeline.deliver(make_event(make_issued())) == "retry"
    assert pipeline.last.error_class == "sealing_key_mismatch"
    assert await pipeline.deliver(make_event(make_issued()), attempt=5) == "dead_letter"
    assert pipeline.last.cause is DeadLetterCause.EXHAUSTED
    assert mailer.attempts == 0
    assert [event["type"] for event in pipeline.events()] == ["share.notification.delayed"]


async def test_logs_carry_no_address_link_or_message(
    settings: Settings,
    make_pipeline: MakePipeline,
    make_issued: MakeIssued,
    make_event: MakeEvent,
    link: str,
) -> None:
    """Neither success nor failure logs the recipient address, the link or the message."""
    issued = make_issued(message="Jane Doe's CT, see prior")
    sent_pipeline = make_pipeline(settings, FakeMailer())
    rejected_pipeline = make_pipeline(
        settings, FakeMailer(MailRejected("550 <bob.jones@clinic.example> unknown"))
    )
    with structlog.testing.capture_logs() as logs:
        await sent_pipeline.deliver(make_event(issued, event_id="e-sent"))
        await rejected_pipeline.deliver(
            make_event(make_issued(share_id="shr_" + "9" * 32), event_id="e-rejected")
        )

    assert {entry["event"] for entry in logs} >= {"email sent", "notification failed"}
    logged = repr(logs)
    assert issued.recipient.email not in logged
    assert link not in logged
    assert link.rsplit("/", 1)[1] not in logged
    assert "Jane Doe" not in logged
