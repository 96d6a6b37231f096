"""A sign-in code's email is worth sending only until the code expires.

Its retry budget ends with the code: retried until then (never scheduled past it), then
answered with ``share.notification.failed`` (purpose ``sign_in_code``, ``code_expired``) and
acknowledged, since replaying an expired code later would be useless.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from blume_contracts.envelope import CloudEvent
from blume_contracts.events import Recipient, ShareOtpRequested
from blume_notifier.mailer import MailUnavailable
from blume_runtime.sealing import Sealer
from blume_runtime.settings import Settings
from blume_runtime.testing import FakeMailer

from .conftest import SHARE_ID

CODE = "493817"


class SlowUnavailableMailer(FakeMailer):
    """An SMTP server that takes ``seconds`` to time out, then is unavailable."""

    def __init__(self, seconds: float) -> None:
        super().__init__(MailUnavailable("SMTP timed out"))
        self.seconds = seconds

    async def send(self, message: EmailMessage) -> None:
        await asyncio.sleep(self.seconds)
        await super().send(message)


def code_request(settings: Settings, expires_at: datetime) -> CloudEvent[ShareOtpRequested]:
    return CloudEvent[ShareOtpRequested](
        id="otp-evt-1",
        source="/blume-share/access_gateway",
        type="share.otp.requested",
        time=datetime.now(UTC),
        tenantid="demo-hospital",
        correlationid="corr-1",
        data=ShareOtpRequested(
            share_id=SHARE_ID,
            link_id="lnk_" + "ef" * 16,
            challenge_id="otp_" + "01" * 16,
            recipient=Recipient(name="Dr. Bob Jones", email="bob@clinic.example"),
            organisation="Demo Hospital",
            locale="en-CA",
            sealed_code=Sealer.from_settings(settings).seal(CODE),
            expires_at=expires_at,
        ),
    )


async def test_a_code_email_is_retried_no_later_than_its_code_expires(
    settings: Settings, make_pipeline: Any
) -> None:
    """SMTP down, code valid 3 more seconds, retries at most 5 minutes apart: the retry is
    scheduled within those 3 seconds, and the wait is announced for the sign-in code."""
    expires_at = datetime.now(UTC) + timedelta(seconds=3)
    slow_retries = settings.model_copy(update={"retry_delay_seconds": 300.0})
    pipeline = make_pipeline(slow_retries, FakeMailer(MailUnavailable("connection refused")))
    assert await pipeline.deliver(code_request(settings, expires_at)) == "retry"
    assert pipeline.last.retry_delay is not None
    assert pipeline.last.retry_delay <= 3
    (delayed,) = pipeline.events()
    assert (delayed["type"], delayed["data"]["purpose"]) == (
        "share.notification.delayed",
        "sign_in_code",
    )


async def test_a_code_that_expired_before_its_email_is_answered_not_sent(
    settings: Settings, make_pipeline: Any
) -> None:
    """Delivered (or retried) after the code expired: nothing is sent; failed, code_expired,
    purpose sign_in_code; acknowledged."""
    mailer = FakeMailer()
    pipeline = make_pipeline(settings, mailer)
    expired = code_request(settings, datetime.now(UTC) - timedelta(seconds=1))
    assert await pipeline.deliver(expired, attempt=7) == "ack"
    assert mailer.attempts == 0
    (failed,) = pipeline.events()
    assert failed["type"] == "share.notification.failed"
    assert (failed["data"]["purpose"], failed["data"]["reason"]) == ("sign_in_code", "code_expired")


async def test_a_code_that_expires_during_a_failed_attempt_is_answered_at_once(
    settings: Settings, make_pipeline: Any
) -> None:
    """The SMTP attempt outlasts the code: the budget ended with it, so the email is answered
    as failed (code_expired) and acknowledged, not retried and not dead-lettered; recorded as
    processed, so a redelivery changes nothing."""
    pipeline = make_pipeline(settings, SlowUnavailableMailer(seconds=0.3))
    request = code_request(settings, datetime.now(UTC) + timedelta(seconds=0.1))
    assert await pipeline.deliver(request, first_failed_at=datetime.now(UTC)) == "ack"
    (failed,) = pipeline.events()
    assert (failed["data"]["purpose"], failed["data"]["reason"]) == ("sign_in_code", "code_expired")
    assert await pipeline.deliver(request) == "ack"
    assert len(pipeline.events()) == 1
