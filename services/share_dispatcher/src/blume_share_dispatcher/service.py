"""share_dispatcher: validates share requests, applies policy and consent, owns share state.

Every ``study.send.requested`` that can be told apart from others (an id, a source and a
type, even if the rest of its envelope is broken) gets exactly one answer: ``share.rejected``
with a reason code, or ``share.accepted`` and later ``share.completed`` or ``share.failed``.

Over 400 lines on purpose: the dispatcher owns each share's state, and every step that
moves it (answer, progress, revocation, consent change, the recipient's opens and grants)
is one handler of one class here, so the state machine's transitions read together.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, Literal

from blume_contracts.envelope import CloudEvent, RawEvent, now
from blume_contracts.events import (
    SHARE_METHODS,
    BlumeStudy,
    PatientAccountUpdated,
    ShareAccepted,
    ShareBlumePublished,
    ShareBlumeRequested,
    ShareBlumeWithheld,
    ShareCompleted,
    ShareFailed,
    ShareLinkAccessed,
    ShareLinkOpened,
    ShareLinkRequested,
    ShareNotificationDelayed,
    ShareNotificationFailed,
    ShareNotificationSent,
    ShareNotificationSuppressed,
    ShareRevoked,
    ShareRevokeRequested,
    ShareTrackingUpdated,
    StudySendRequested,
    share_method,
)
from blume_runtime.app import serve
from blume_runtime.service import Handler, HandlerContext, PermanentError, Service
from blume_runtime.settings import Settings
from blume_runtime.tenants import TenantPolicy, load_policies
from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_share_dispatcher import shares
from blume_share_dispatcher.accounts import PatientDirectory, SqlPatientDirectory, apply_account
from blume_share_dispatcher.models import Share, ShareState
from blume_share_dispatcher.rules import (
    Rejection,
    check_policy,
    consent_rejection,
    envelope_rejection,
    expiry,
    rejection_for,
)
from blume_share_dispatcher.senders import mask_address, sender_contact, tell_sender

NAME = "share_dispatcher"
CONSENT_DIRECTIVE: Final = "consent_directive"
CONSENT_REQUESTER: Final = "patient-consent"
"""Who ``share.revoked`` names when the patient's consent directive ended the share."""
Notification = Literal["sent", "suppressed_by_preference"]


def next_step(
    share_id: str,
    request: StudySendRequested,
    policy: TenantPolicy,
    expires_at: datetime | None,
) -> tuple[str, ShareLinkRequested | ShareBlumeRequested]:
    """The request for the worker that carries an accepted share forward."""
    study = request.study
    if request.patient_account is not None:
        return "share.blume.requested", ShareBlumeRequested(
            share_id=share_id,
            tenant_id=request.tenant_id,
            blume_patient_id=request.patient_account.blume_patient_id,
            study=BlumeStudy(
                study_instance_uid=study.study_instance_uid,
                patient_mrn=study.patient.mrn,
                study_date=study.study_date,
                modalities=study.modalities,
                description=study.description,
            ),
        )
    assert expires_at is not None  # external links always expire
    return "share.link.requested", ShareLinkRequested.for_request(
        request,
        share_id=share_id,
        expires_at=expires_at,
        organisation=policy.display_name,
        recipient_auth=policy.recipient_auth,
        max_uses=policy.link_max_uses,
    )


class Dispatcher:
    """The handlers, over the tenant policies and the patient directory."""

    def __init__(
        self,
        policies: dict[str, TenantPolicy],
        directory_for: Callable[[AsyncSession], PatientDirectory],
    ) -> None:
        self._policies = policies
        self._directory_for = directory_for

    async def reject(self, request: RawEvent, rejection: Rejection, ctx: HandlerContext) -> None:
        method = request.data.get("method") if isinstance(request.data, dict) else None
        sender = sender_contact(request.data)
        share = Share.answering(
            request,
            tenant_id=request.tenantid,
            method=method if method in SHARE_METHODS else "unknown",
            state=ShareState.REJECTED,
            reason=rejection.reason.value,
            sender_name=sender.name,
            sender_email=sender.email,
            locale=sender.locale,
        )
        await shares.add(ctx.session, share)
        ctx.emit("share.rejected", rejection.answer(share.share_id))
        ctx.log.info("share rejected", share_id=share.share_id, reason=rejection.reason.value)
        if request.tenantid in self._policies:
            # An unknown tenant's request names no organisation to speak for: no email.
            tell_sender(ctx, share, "rejected", rejection.reason.value)

    async def reject_invalid(
        self, request: RawEvent, error: ValidationError, ctx: HandlerContext
    ) -> None:
        if request.type != "study.send.requested":
            # Our own events breaking their contract is a bug: keep the message for ops.
            raise PermanentError(f"{request.type} breaks its contract")
        await self.reject(request, rejection_for(error), ctx)

    async def reject_envelope(
        self, request: RawEvent, error: ValidationError, ctx: HandlerContext
    ) -> None:
        """A request whose envelope is broken but identifiable: answered, not dead-lettered.

        ``request`` is the runtime's stand-in envelope (``usable_envelope``): the rejection
        goes to the request's tenant, or ``_unknown``, correlated by its correlation id, or
        else by its own id.
        """
        await self.reject(request, envelope_rejection(error), ctx)

    async def accept(self, event: CloudEvent[StudySendRequested], ctx: HandlerContext) -> None:
        request = event.data
        verdict = check_policy(request, event.tenantid, self._policies)
        if isinstance(verdict, Rejection):
            await self.reject(event, verdict, ctx)
            return
        refusal = await consent_rejection(request, self._directory_for(ctx.session))
        if refusal is not None:
            await self.reject(event, refusal, ctx)
            return
        expires_at = expiry(request, verdict, now())
        share = Share.answering(
            event,
            tenant_id=request.tenant_id,
            method=request.method,
            state=ShareState.ACCEPTED,
            expires_at=expires_at,
            sender_name=request.sender.name,
            sender_email=request.sender.email,
            locale=request.locale,
            recipient_hint=mask_address(request.recipient.email) if request.recipient else None,
            patient_mrn=request.study.patient.mrn,
        )
        await shares.add(ctx.session, share)
        ctx.emit(
            "share.accepted",
            ShareAccepted(share_id=share.share_id, method=request.method, expires_at=expires_at),
        )
        ctx.emit(*next_step(share.share_id, request, verdict, expires_at))
        ctx.log.info("share accepted", share_id=share.share_id, method=request.method)

    async def transition(
        self, ctx: HandlerContext, share_id: str, state: ShareState, **columns: Any
    ) -> Share | None:
        """Move the share to ``state`` (setting ``columns`` with it) if it may; the share as
        it now is, or None, logged (unknown, or a late or duplicate event)."""
        share = await shares.move(ctx.session, share_id, state, **columns)
        if share is None:
            await self._not_moved(ctx, share_id, state)
        return share

    async def _not_moved(self, ctx: HandlerContext, share_id: str, state: ShareState) -> None:
        self._log_not_moved(ctx, await shares.owner(ctx.session, share_id), state)

    @staticmethod
    def _log_not_moved(
        ctx: HandlerContext, found: tuple[str, ShareState] | None, state: ShareState
    ) -> None:
        if found is None:
            ctx.log.warning("event for an unknown share ignored")
        else:
            ctx.log.info("state change ignored", current=found[1], requested=state)

    async def published(self, event: CloudEvent[ShareBlumePublished], ctx: HandlerContext) -> None:
        await self.transition(ctx, event.data.share_id, ShareState.PUBLISHED)

    async def complete(
        self,
        ctx: HandlerContext,
        share_id: str,
        notification: Notification,
        message_id: str | None,
    ) -> None:
        share = await self.transition(
            ctx,
            share_id,
            ShareState.COMPLETED,
            notification_message_id=message_id,
            reason=None if notification == "sent" else notification,
        )
        if share is None:
            return
        ctx.emit(
            "share.completed",
            ShareCompleted(
                share_id=share.share_id,
                method=share_method(share.method),
                completed_at=now(),
                notification=notification,
                notification_message_id=message_id,
            ),
        )

    async def notified(self, event: CloudEvent[ShareNotificationSent], ctx: HandlerContext) -> None:
        if event.data.purpose != "share":
            return  # a code, or a note to the sender: the share's own email completes it
        await self.complete(ctx, event.data.share_id, "sent", event.data.message_id)

    async def suppressed(
        self, event: CloudEvent[ShareNotificationSuppressed], ctx: HandlerContext
    ) -> None:
        await self.complete(ctx, event.data.share_id, "suppressed_by_preference", None)

    async def delayed(
        self, event: CloudEvent[ShareNotificationDelayed], ctx: HandlerContext
    ) -> None:
        """The email waits on an outage: the share waits too (it has not failed)."""
        notice = event.data
        if notice.purpose != "share":
            return  # a sign-in code's delay is the recipient's to notice, not the share's
        share = await shares.wait(
            ctx.session, notice.share_id, notice.error_class, notice.first_failed_at
        )
        if share is None:
            await self._not_moved(ctx, notice.share_id, ShareState.WAITING)
            return
        ctx.log.info("share waiting", error_class=notice.error_class)

    async def fail(self, ctx: HandlerContext, share_id: str, reason: str, message: str) -> None:
        share = await self.transition(ctx, share_id, ShareState.FAILED, reason=reason)
        if share is None:
            return
        ctx.emit(
            "share.failed",
            ShareFailed(share_id=share.share_id, reason=reason, message=message, failed_at=now()),
        )
        tell_sender(ctx, share, "failed", reason)

    async def notification_failed(
        self, event: CloudEvent[ShareNotificationFailed], ctx: HandlerContext
    ) -> None:
        if event.data.purpose != "share":
            return  # the recipient can ask for another code; the share itself is fine
        message = "the notification email could not be delivered"
        await self.fail(ctx, event.data.share_id, event.data.reason, message)

    async def withheld(self, event: CloudEvent[ShareBlumeWithheld], ctx: HandlerContext) -> None:
        await self.fail(ctx, event.data.share_id, event.data.reason, event.data.message)

    async def revoke(self, event: CloudEvent[ShareRevokeRequested], ctx: HandlerContext) -> None:
        request = event.data
        # A requester may end only its own tenant's shares; the audit sink keeps the ask.
        share = await shares.revoke(ctx.session, request.share_id, event.tenantid)
        if share is None:
            found = await shares.owner(ctx.session, request.share_id)
            if found is not None and found[0] != event.tenantid:
                ctx.log.warning("revocation refused: the share belongs to another tenant")
            else:
                self._log_not_moved(ctx, found, ShareState.REVOKED)
            return
        self._announce_revocation(ctx, share, request.requested_by, request.reason)

    def _announce_revocation(
        self, ctx: HandlerContext, share: Share, requested_by: str, reason: str | None
    ) -> None:
        ctx.emit(
            "share.revoked",
            ShareRevoked(
                share_id=share.share_id,
                method=share_method(share.method),
                requested_by=requested_by,
                reason=reason,
                revoked_at=now(),
            ),
            tenantid=share.tenant_id,
            correlationid=share.correlation_id,
        )
        ctx.log.info("share revoked", share_id=share.share_id)

    async def consent_changed(
        self, event: CloudEvent[PatientAccountUpdated], ctx: HandlerContext
    ) -> None:
        """Project the account; a lock box set on it revokes the patient's live shares.

        ``patient.account.updated`` carries the directives, so it is the consent-change event
        (whatever wrote the account: the CLI import included). ``withhold_external_links``
        ends every live link share of the patient's studies, ``withhold_portal`` every live
        Blume share (matched by tenant and MRN); each revocation names its directive and the
        sender is told. Revoking only live shares makes a repeated update change nothing.
        """
        if not await apply_account(ctx.session, event):
            return  # an older copy arriving late: the newer one already acted
        account = event.data
        directives = {
            "external_link": account.withhold_external_links,
            "blume": account.withhold_portal,
        }
        withheld = [method for method, withhold in directives.items() if withhold]
        if not withheld:
            return
        revoked = await shares.revoke_live(
            ctx.session, account.tenant_id, account.mrn, withheld, CONSENT_DIRECTIVE
        )
        for share in revoked:
            directive = (
                "withhold_external_links" if share.method == "external_link" else "withhold_portal"
            )
            self._announce_revocation(
                ctx, share, CONSENT_REQUESTER, f"{CONSENT_DIRECTIVE}: {directive}"
            )
            tell_sender(ctx, share, "revoked", CONSENT_DIRECTIVE)

    async def link_opened(self, event: CloudEvent[ShareLinkOpened], ctx: HandlerContext) -> None:
        share = self._tracked(
            ctx, await shares.count_open(ctx.session, event.data.share_id, event.time)
        )
        if share is None:
            return
        self._announce_tracking(ctx, share)

    async def link_accessed(
        self, event: CloudEvent[ShareLinkAccessed], ctx: HandlerContext
    ) -> None:
        share = self._tracked(
            ctx, await shares.count_access(ctx.session, event.data.share_id, event.time)
        )
        if share is None:
            return
        self._announce_tracking(ctx, share)
        policy = self._policies.get(share.tenant_id)
        if (
            share.accessed_count == 1
            and policy is not None
            and policy.notify_sender_on_first_access
        ):
            tell_sender(ctx, share, "first_access", None)

    @staticmethod
    def _tracked(ctx: HandlerContext, share: Share | None) -> Share | None:
        """The share whose link was used, counted in one UPDATE that locks its row (the
        inbox, in the same transaction, makes a redelivered event count once)."""
        if share is None:
            ctx.log.warning("link use for an unknown share ignored")
        return share

    def _announce_tracking(self, ctx: HandlerContext, share: Share) -> None:
        # The event's fields are the share's counters, under the same names.
        ctx.emit(
            "share.tracking.updated",
            ShareTrackingUpdated.model_validate(share, from_attributes=True),
            tenantid=share.tenant_id,
            correlationid=share.correlation_id,
        )


def build(
    settings: Settings,
    directory_for: Callable[[AsyncSession], PatientDirectory] = SqlPatientDirectory,
) -> Service:
    dispatcher = Dispatcher(load_policies(settings.tenant_policy_file), directory_for)
    service = Service(NAME)
    service.on_invalid_data(dispatcher.reject_invalid)
    service.on_invalid_envelope("study.send.requested")(dispatcher.reject_envelope)
    # Not share.link.issued: minting the link moved no share anywhere that matters (its email's
    # outcome completes, delays or fails the share, and may overtake it anyway); the sender's
    # timeline projects the event from the gateway's own queue, and the audit records it from
    # the link issuer's staging. Consuming it cost a delivery and a transaction per share.
    handlers: dict[str, Handler] = {
        "study.send.requested": dispatcher.accept,
        "share.blume.published": dispatcher.published,
        "share.notification.sent": dispatcher.notified,
        "share.notification.suppressed": dispatcher.suppressed,
        "share.notification.failed": dispatcher.notification_failed,
        "share.notification.delayed": dispatcher.delayed,
        "share.blume.withheld": dispatcher.withheld,
        "share.revoke.requested": dispatcher.revoke,
        "patient.account.updated": dispatcher.consent_changed,
        "share.link.opened": dispatcher.link_opened,
        "share.link.accessed": dispatcher.link_accessed,
    }
    for event_type, handler in handlers.items():
        service.handles(event_type)(handler)
    return service


def main() -> None:
    serve([build])
