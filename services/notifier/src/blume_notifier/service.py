"""notifier: emails the recipient their secure link once the link is issued.

One email per share, exactly once in effect: a ``Notification`` row, written in the same
transaction as the inbox row and the ``share.notification.sent`` event, records that the
SMTP server accepted it. Sending happens before commit, so a crash between the two can
repeat the email on redelivery; the Message-ID is stable per share for that reason.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from blume_contracts.envelope import CloudEvent
from blume_contracts.events import ShareLinkIssued, ShareNotificationFailed, ShareNotificationSent
from blume_contracts.sensitivity import fingerprint
from blume_runtime.app import serve
from blume_runtime.db import utcnow
from blume_runtime.logging import scrub_text
from blume_runtime.sealing import Sealer
from blume_runtime.service import HandlerContext, Service, TransientError
from blume_runtime.settings import Settings
from jinja2 import TemplateError

from blume_notifier.mailer import Mailer, MailRejected, MailUnavailable, mailer_from_settings
from blume_notifier.models import STATUS_SENT, Notification, notification_key
from blume_notifier.render import build_link_email, link_message_id, message_domain

NAME = "notifier"
MAX_DETAIL_LENGTH: Final = 500

FailureReason = Literal["smtp_rejected", "smtp_unavailable", "template_error"]


def recipient_fingerprint(address: str) -> str:
    """How the notifier refers to an address it must not keep (case-insensitive match)."""
    return fingerprint(address.strip().lower())


def failure_detail(error: Exception, recipient_email: str) -> str:
    """A loggable, bounded description: never the recipient's address, whatever the server said."""
    text = f"{type(error).__name__}: {error}"
    # Servers quote the address in any case; scrub_text then catches every other address.
    text = re.sub(re.escape(recipient_email), "[recipient]", text, flags=re.IGNORECASE)
    return scrub_text(text)[:MAX_DETAIL_LENGTH]


def build(settings: Settings, mailer: Mailer | None = None) -> Service:
    service = Service(NAME)
    sealer = Sealer.from_settings(settings)
    outbound = mailer if mailer is not None else mailer_from_settings(settings)
    mail_from = settings.mail_from
    message_domain(mail_from)  # fail at start-up, not on the first email

    def fail(ctx: HandlerContext, share_id: str, reason: FailureReason, detail: str) -> None:
        ctx.emit(
            "share.notification.failed",
            ShareNotificationFailed(share_id=share_id, reason=reason, detail=detail),
        )
        ctx.log.warning("notification failed", reason=reason, detail=detail)

    @service.handles("share.link.issued")
    async def email_link(event: CloudEvent[ShareLinkIssued], ctx: HandlerContext) -> None:
        issued = event.data
        key = notification_key(issued.share_id, "link")
        if await ctx.session.get(Notification, key) is not None:
            # The committed first attempt already emitted share.notification.sent.
            ctx.log.info("link email already sent; nothing to do")
            return

        try:
            link = sealer.unseal(issued.sealed_link)
        except ValueError:
            # Usually a key rotation that has not reached this worker yet: retry, and let
            # the runtime dead-letter it (for ops to replay) if the keys never match.
            raise TransientError("sealed link cannot be opened with the configured keys") from None

        message_id = link_message_id(issued.share_id, mail_from)
        try:
            message = build_link_email(issued, link, mail_from=mail_from, message_id=message_id)
        except (TemplateError, ValueError) as error:
            detail = failure_detail(error, issued.recipient.email)
            fail(ctx, issued.share_id, "template_error", detail)
            return

        try:
            await outbound.send(message)
        except MailRejected as error:
            detail = failure_detail(error, issued.recipient.email)
            fail(ctx, issued.share_id, "smtp_rejected", detail)
            return
        except MailUnavailable as error:
            detail = failure_detail(error, issued.recipient.email)
            if not ctx.final_attempt:
                raise TransientError(detail) from None
            fail(ctx, issued.share_id, "smtp_unavailable", detail)
            return

        accepted_at = utcnow()
        ctx.session.add(
            Notification(
                notification_key=key,
                share_id=issued.share_id,
                message_id=message_id,
                recipient_fingerprint=recipient_fingerprint(issued.recipient.email),
                status=STATUS_SENT,
                sent_at=accepted_at,
            )
        )
        ctx.emit(
            "share.notification.sent",
            ShareNotificationSent(
                share_id=issued.share_id,
                message_id=message_id,
                recipient_email=issued.recipient.email,
                accepted_at=accepted_at,
            ),
        )
        ctx.log.info("link email sent", message_id=message_id, locale=issued.locale)

    return service


def main() -> None:
    serve([build])
