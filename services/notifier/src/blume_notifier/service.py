"""notifier: emails the recipient their secure link, and the patient their Step into Blume.

One email of each kind per share, exactly once in effect: a ``Notification`` row, written in
the same transaction as the inbox row and the ``share.notification.sent`` event, records
that the SMTP server accepted it. The row is claimed (inserted) before the email is sent, so a
second delivery for the same email, running at the same time under another event id, waits
on that row until the first commits, then finds it and sends nothing. Sending happens before
commit. When the transaction fails after the server accepted the email (the database went
away, say), the process remembers the acceptance (``AcceptedEmails``): the retry records it
without sending it again. The memory is this process's: a crash between the two, or a retry
handled by another process (a replica, a restart, a replay from the dead-letter queue), repeats
the email, and the Message-ID is stable per share for that reason.

An SMTP server that cannot take the email now (connection refused, timeout, 4xx) is a
transient failure of class ``smtp_unavailable``: the runtime retries it within that class's
budget, and the first retry emits ``share.notification.delayed`` so the share shows as
waiting. Only a permanent refusal (5xx) fails the share at once. A sign-in code's email is
retried only until the code expires; then ``share.notification.failed`` (``code_expired``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from email.message import Message
from typing import Any, Final, Literal

from blume_contracts.display import DEFAULT_TIME_ZONE
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import (
    NotificationAddressee,
    NotificationPurpose,
    SenderNotificationRequested,
    ShareBlumePublished,
    ShareLinkIssued,
    ShareLinkLocked,
    ShareNotificationDelayed,
    ShareNotificationFailed,
    ShareNotificationSent,
    ShareNotificationSuppressed,
    ShareOtpRequested,
)
from blume_contracts.sensitivity import fingerprint
from blume_contracts.tokens import UnsubscribeClaims
from blume_contracts.urls import portal_study_url, unsubscribe_url
from blume_runtime.app import serve
from blume_runtime.db import dialect_name, execute, fetch, utcnow
from blume_runtime.logging import scrub_text
from blume_runtime.metrics import EMAILS
from blume_runtime.retry import SMTP_UNAVAILABLE
from blume_runtime.sealing import Sealer
from blume_runtime.service import HandlerContext, RetryNotice, Service, TransientError
from blume_runtime.settings import Settings
from blume_runtime.tenants import load_policies
from jinja2 import TemplateError
from sqlalchemy import Insert, Table, bindparam, delete, update
from sqlalchemy.dialects import postgresql, sqlite

from blume_notifier.mailer import (
    Mailer,
    MailRejected,
    MailUnavailable,
    SmtpMailer,
    mailer_from_settings,
)
from blume_notifier.models import Notification, notification_key
from blume_notifier.render import (
    build_blume_email,
    build_code_email,
    build_link_email,
    build_link_locked_email,
    message_domain,
    message_id_for,
)
from blume_notifier.sender_notices import build_sender_notice_email

NAME = "notifier"
MAX_DETAIL_LENGTH: Final = 500

FailureReason = Literal["smtp_rejected", "template_error", "code_expired"]
SEALING_KEY_MISMATCH: Final = "sealing_key_mismatch"
"""Usually a key rotation that has not reached this worker yet: retried a few times, then
dead-lettered for ops to replay once the keys match."""

_NOTIFICATIONS: Final[Table] = Notification.__table__  # type: ignore[attr-defined]
_KEY: Final = _NOTIFICATIONS.c.notification_key
# Built once and run with ``blume_runtime.db.fetch`` (on PostgreSQL, on the driver): per email
# one claim before sending and one statement after (the moment of acceptance, or the claim's
# release), with none of the ORM's identity map.
# The claim is INSERT ... ON CONFLICT DO NOTHING RETURNING: a concurrent claim of the same
# key waits for this transaction, then returns nothing if it committed.
_CLAIM: Final[dict[str, Insert]] = {
    name: dialect_insert(_NOTIFICATIONS).on_conflict_do_nothing().returning(_KEY)
    for name, dialect_insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}
_BY_KEY: Final = _NOTIFICATIONS.c.notification_key == bindparam("key")
_ACCEPTED: Final = update(_NOTIFICATIONS).where(_BY_KEY).values(sent_at=bindparam("sent_at"))
_RELEASE: Final = delete(_NOTIFICATIONS).where(_BY_KEY)


class AcceptedEmails:
    """The emails this process handed to the SMTP server, by notification key, with the
    moment the server accepted each.

    Consulted only when the key's claim succeeds, which means no committed transaction
    recorded the email: an entry then says that the server took it and the transaction that
    would have recorded it failed. The newest ``capacity`` entries are kept; a retry comes
    within the retry budget, long before an entry is pushed out.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._accepted: OrderedDict[str, datetime] = OrderedDict()

    def remember(self, key: str, accepted_at: datetime) -> None:
        self._accepted[key] = accepted_at
        if len(self._accepted) > self._capacity:
            self._accepted.popitem(last=False)

    def recall(self, key: str) -> datetime | None:
        return self._accepted.get(key)


def recipient_fingerprint(address: str) -> str:
    """How the notifier refers to an address it must not keep (case-insensitive match)."""
    return fingerprint(address.strip().lower())


def failure_detail(error: Exception, recipient_email: str) -> str:
    """A loggable, bounded description: never the recipient's address, whatever the server said."""
    text = f"{type(error).__name__}: {error}"
    # Servers quote the address in any case; scrub_text then catches every other address.
    text = re.sub(re.escape(recipient_email), "[recipient]", text, flags=re.IGNORECASE)
    return scrub_text(text)[:MAX_DETAIL_LENGTH]


class Notifier:
    """Sends each email once: the Notification row, committed with the inbox row and the
    share.notification.sent event, is what a redelivery finds."""

    def __init__(self, settings: Settings, mailer: Mailer) -> None:
        self._sealer = Sealer.from_settings(settings)
        self._mailer = mailer
        self._mail_from = settings.mail_from
        self._portal_base_url = settings.portal_base_url
        self._public_base_url = settings.public_base_url
        self._policies = load_policies(settings.tenant_policy_file)
        message_domain(self._mail_from)  # fail at start-up, not on the first email
        self._accepted = AcceptedEmails()

    def _fail(
        self,
        ctx: HandlerContext,
        share_id: str,
        reason: FailureReason,
        detail: str,
        purpose: NotificationPurpose,
    ) -> None:
        ctx.emit(
            "share.notification.failed",
            ShareNotificationFailed(
                share_id=share_id, purpose=purpose, reason=reason, detail=detail
            ),
        )
        ctx.log.warning("notification failed", reason=reason, detail=detail)

    async def _deliver(
        self,
        ctx: HandlerContext,
        share_id: str,
        kind: str,
        recipient_email: str,
        compose: Callable[[str], Message],
        purpose: NotificationPurpose = "share",
        deadline: datetime | None = None,
        addressee: NotificationAddressee = "recipient",
    ) -> None:
        """Claim, build with ``compose(message_id)``, send, and record; or emit why it failed.

        A server that is not there raises ``TransientError`` (retried until ``deadline``,
        if any, else the class's budget).
        """
        key = notification_key(share_id, kind)
        message_id = message_id_for(share_id, kind, self._mail_from)
        claim = {
            "notification_key": key,
            "share_id": share_id,
            "message_id": message_id,
            "recipient_fingerprint": recipient_fingerprint(recipient_email),
            "sent_at": utcnow(),  # the moment of acceptance replaces it before commit
        }
        if not await fetch(ctx.session, _CLAIM[dialect_name(ctx.session)], claim):
            # A committed attempt already sent it and emitted share.notification.sent.
            ctx.log.info("email already sent; nothing to do", kind=kind)
            return
        accepted_at = self._accepted.recall(key)
        if accepted_at is not None:
            ctx.log.info("email accepted by the server before; recorded now", kind=kind)
        else:
            # A sign-in code's kind is its challenge id: the metric's label names the purpose.
            email_kind = "sign_in_code" if purpose == "sign_in_code" else kind
            failure = await self._send(compose, message_id, recipient_email, email_kind, deadline)
            if failure is not None:
                await execute(ctx.session, _RELEASE, {"key": key})
                reason, detail = failure
                self._fail(ctx, share_id, reason, detail, purpose)
                return
            accepted_at = utcnow()
            self._accepted.remember(key, accepted_at)
        await execute(ctx.session, _ACCEPTED, {"key": key, "sent_at": accepted_at})
        # What the notification records, the event reports: the same id, the same moment.
        # Constructed, not validated again: every field is a validated field of the event
        # being handled (the address, the share id) or made here (the id, the moment), and
        # validating the address once more cost an email_validator parse per email.
        ctx.emit(
            "share.notification.sent",
            ShareNotificationSent.model_construct(
                share_id=share_id,
                purpose=purpose,
                addressee=addressee,
                message_id=message_id,
                recipient_email=recipient_email,
                accepted_at=accepted_at,
            ),
        )
        ctx.log.info("email sent", kind=kind, message_id=message_id)

    async def _send(
        self,
        compose: Callable[[str], Message],
        message_id: str,
        recipient_email: str,
        email_kind: str,
        deadline: datetime | None,
    ) -> tuple[FailureReason, str] | None:
        """Build and send the email; None once the server accepted it, else why it failed
        for good. A server that is not there now raises ``TransientError``."""
        try:
            message = compose(message_id)
        except (TemplateError, ValueError) as error:
            EMAILS.labels(kind=email_kind, outcome="failed").inc()
            return "template_error", failure_detail(error, recipient_email)
        try:
            await self._mailer.send(message)
        except MailRejected as error:
            EMAILS.labels(kind=email_kind, outcome="failed").inc()
            return "smtp_rejected", failure_detail(error, recipient_email)
        except MailUnavailable as error:
            # The transaction rolls back, the claim with it: the retry claims it again.
            detail = failure_detail(error, recipient_email)
            EMAILS.labels(kind=email_kind, outcome="deferred").inc()
            raise TransientError(SMTP_UNAVAILABLE, deadline, detail=detail) from None
        EMAILS.labels(kind=email_kind, outcome="sent").inc()
        return None

    async def email_link(self, event: CloudEvent[ShareLinkIssued], ctx: HandlerContext) -> None:
        issued = event.data
        try:
            link = self._sealer.unseal(issued.sealed_link)
        except ValueError:
            raise TransientError(
                SEALING_KEY_MISMATCH, detail="sealed link cannot be opened with the keys"
            ) from None
        policy = self._policies.get(event.tenantid)
        sender_domains = policy.sender_domains if policy is not None else ()
        time_zone = policy.time_zone if policy is not None else DEFAULT_TIME_ZONE
        await self._deliver(
            ctx,
            issued.share_id,
            "link",
            issued.recipient.email,
            lambda message_id: build_link_email(
                issued,
                link,
                mail_from=self._mail_from,
                message_id=message_id,
                sender_domains=sender_domains,
                time_zone=time_zone,
            ),
        )

    async def invite_to_blume(
        self, event: CloudEvent[ShareBlumePublished], ctx: HandlerContext
    ) -> None:
        published = event.data
        if not published.email_notifications:
            ctx.emit(
                "share.notification.suppressed",
                ShareNotificationSuppressed(share_id=published.share_id),
            )
            ctx.log.info("email suppressed by the patient's preference")
            return
        portal_link = portal_study_url(self._portal_base_url, published.entry_id)
        claims = UnsubscribeClaims(p=published.blume_patient_id, t=event.tenantid)
        unsubscribe = unsubscribe_url(self._public_base_url, self._sealer.seal(claims.to_text()))
        await self._deliver(
            ctx,
            published.share_id,
            "blume",
            published.patient_email,
            lambda message_id: build_blume_email(
                published,
                portal_link,
                mail_from=self._mail_from,
                message_id=message_id,
                unsubscribe=unsubscribe,
            ),
            addressee="patient",
        )

    async def email_sign_in_code(
        self, event: CloudEvent[ShareOtpRequested], ctx: HandlerContext
    ) -> None:
        request = event.data
        if request.expires_at <= utcnow():
            # Sending it now would only confuse: the recipient asks for a new code.
            detail = "the sign-in code expired before its email could be sent"
            self._fail(ctx, request.share_id, "code_expired", detail, "sign_in_code")
            return
        try:
            code = self._sealer.unseal(request.sealed_code)
        except ValueError:
            raise TransientError(
                SEALING_KEY_MISMATCH, request.expires_at, detail="sealed code cannot be opened"
            ) from None
        await self._deliver(
            ctx,
            request.share_id,
            request.challenge_id,
            request.recipient.email,
            lambda message_id: build_code_email(
                request, code, mail_from=self._mail_from, message_id=message_id
            ),
            purpose="sign_in_code",
            deadline=request.expires_at,
        )

    async def tell_sender_link_locked(
        self, event: CloudEvent[ShareLinkLocked], ctx: HandlerContext
    ) -> None:
        """The link locked itself after too many wrong codes: the sender hears of it once."""
        locked = event.data
        await self._deliver(
            ctx,
            locked.share_id,
            "link-locked",
            locked.sender_email,
            lambda message_id: build_link_locked_email(
                locked, mail_from=self._mail_from, message_id=message_id
            ),
            purpose="link_locked",
        )

    async def tell_sender(
        self, event: CloudEvent[SenderNotificationRequested], ctx: HandlerContext
    ) -> None:
        """What became of a share, to its sender: one email per share and occasion (its
        Message-ID derives from both, so a redelivery neither sends a second one nor a
        different one)."""
        notice = event.data
        policy = self._policies.get(event.tenantid)
        organisation = policy.display_name if policy is not None else event.tenantid
        await self._deliver(
            ctx,
            notice.share_id,
            f"sender-{notice.occasion.replace('_', '-')}",
            notice.sender_email,
            lambda message_id: build_sender_notice_email(
                notice, organisation=organisation, mail_from=self._mail_from, message_id=message_id
            ),
            purpose="sender_notice",
            addressee="sender",
        )

    async def announce_delay(
        self, event: CloudEvent[Any], notice: RetryNotice, ctx: HandlerContext
    ) -> None:
        """The email waits on an outage: say so once per error class, so the share shows it."""
        ctx.emit(
            "share.notification.delayed",
            ShareNotificationDelayed(
                share_id=event.data.share_id,
                purpose=_purpose_of(event.type),
                error_class=notice.error_class,
                first_failed_at=notice.first_failed_at,
                next_attempt_at=notice.next_attempt_at,
            ),
        )

    async def give_up(self, event: CloudEvent[Any], error_class: str, ctx: HandlerContext) -> bool:
        """A sign-in code's budget ended with the code: replaying it later would be useless,
        so answer it as failed. Any other email is dead-lettered for ops to replay."""
        if _purpose_of(event.type) != "sign_in_code":
            return False
        detail = f"the sign-in code expired while its email waited ({error_class})"
        self._fail(ctx, event.data.share_id, "code_expired", detail, "sign_in_code")
        return True


_PURPOSES: Final[dict[str, NotificationPurpose]] = {
    "share.otp.requested": "sign_in_code",
    "share.link.locked": "link_locked",
    "share.sender.notification.requested": "sender_notice",
}


def _purpose_of(event_type: str) -> NotificationPurpose:
    return _PURPOSES.get(event_type, "share")


class KeptConnections:
    """The SMTP mailer's kept-open connections, said QUIT to when the process stops (the
    server would otherwise see them drop mid-session)."""

    def __init__(self, mailer: SmtpMailer) -> None:
        self._mailer = mailer

    async def start(self) -> None:
        """Nothing to open: the mailer connects on its first email."""

    async def stop(self) -> None:
        await self._mailer.close()


def build(settings: Settings, mailer: Mailer | None = None) -> Service:
    mailer = mailer if mailer is not None else mailer_from_settings(settings)
    notifier = Notifier(settings, mailer)
    # Emails go out before commit: a batch rolled back for a neighbour would send them twice.
    service = Service(NAME, group_commit=False)
    if isinstance(mailer, SmtpMailer):
        service.components.append(KeptConnections(mailer))
    service.handles("share.link.issued")(notifier.email_link)
    service.handles("share.blume.published")(notifier.invite_to_blume)
    service.handles("share.otp.requested")(notifier.email_sign_in_code)
    service.handles("share.link.locked")(notifier.tell_sender_link_locked)
    service.handles("share.sender.notification.requested")(notifier.tell_sender)
    service.on_retry_scheduled(notifier.announce_delay)
    service.on_exhausted(notifier.give_up)
    return service


def main() -> None:
    serve([build])
