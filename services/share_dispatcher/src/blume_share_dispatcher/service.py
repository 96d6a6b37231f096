"""share_dispatcher: validates share requests, applies policy and consent, owns share state.

Every ``study.send.requested`` that can be told apart from others (an id, a source and a
type, even if the rest of its envelope is broken) gets exactly one answer: ``share.rejected``
with a reason code, or ``share.accepted`` and later ``share.completed`` or ``share.failed``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

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
    ShareLinkIssued,
    ShareLinkRequested,
    ShareNotificationDelayed,
    ShareNotificationFailed,
    ShareNotificationSent,
    ShareNotificationSuppressed,
    ShareRejected,
    ShareRevoked,
    ShareRevokeRequested,
    StudySendRequested,
    share_method,
)
from blume_runtime.app import serve
from blume_runtime.db import utcnow
from blume_runtime.service import HandlerContext, PermanentError, Service
from blume_runtime.settings import Settings
from blume_runtime.tenants import TenantPolicy, load_policies
from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

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

NAME = "share_dispatcher"
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
        share = Share.answering(
            request,
            tenant_id=request.tenantid,
            method=method if method in SHARE_METHODS else "unknown",
            state=ShareState.REJECTED,
            reason=rejection.reason.value,
        )
        ctx.session.add(share)
        ctx.emit(
            "share.rejected",
            ShareRejected(
                share_id=share.share_id,
                reason=rejection.reason,
                message=rejection.message,
                field=rejection.field,
            ),
        )
        ctx.log.info("share rejected", share_id=share.share_id, reason=rejection.reason.value)

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
        )
        ctx.session.add(share)
        ctx.emit(
            "share.accepted",
            ShareAccepted(share_id=share.share_id, method=request.method, expires_at=expires_at),
        )
        ctx.emit(*next_step(share.share_id, request, verdict, expires_at))
        ctx.log.info("share accepted", share_id=share.share_id, method=request.method)

    async def transition(
        self, ctx: HandlerContext, share_id: str, state: ShareState
    ) -> Share | None:
        share = await ctx.session.get(Share, share_id, with_for_update=True)
        if share is None:
            ctx.log.warning("event for an unknown share ignored")
            return None
        if not share.can_become(state):
            ctx.log.info("state change ignored", current=share.state, requested=state)
            return None
        share.state = state
        share.updated_at = utcnow()
        return share

    async def link_issued(self, event: CloudEvent[ShareLinkIssued], ctx: HandlerContext) -> None:
        await self.transition(ctx, event.data.share_id, ShareState.LINK_ISSUED)

    async def published(self, event: CloudEvent[ShareBlumePublished], ctx: HandlerContext) -> None:
        await self.transition(ctx, event.data.share_id, ShareState.PUBLISHED)

    async def complete(
        self,
        ctx: HandlerContext,
        share_id: str,
        notification: Notification,
        message_id: str | None,
    ) -> None:
        share = await self.transition(ctx, share_id, ShareState.COMPLETED)
        if share is None:
            return
        share.notification_message_id = message_id
        share.reason = None if notification == "sent" else notification
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
        share = await self.transition(ctx, notice.share_id, ShareState.WAITING)
        if share is None:
            return
        share.reason = notice.error_class
        if share.waiting_since is None or notice.first_failed_at < share.waiting_since:
            share.waiting_since = notice.first_failed_at
        ctx.log.info("share waiting", error_class=notice.error_class)

    async def fail(self, ctx: HandlerContext, share_id: str, reason: str, message: str) -> None:
        share = await self.transition(ctx, share_id, ShareState.FAILED)
        if share is None:
            return
        share.reason = reason
        ctx.emit(
            "share.failed",
            ShareFailed(share_id=share.share_id, reason=reason, message=message, failed_at=now()),
        )

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
        owner = await ctx.session.get(Share, request.share_id, with_for_update=True)
        if owner is not None and owner.tenant_id != event.tenantid:
            # A requester may end only its own tenant's shares; the audit sink keeps the ask.
            ctx.log.warning("revocation refused: the share belongs to another tenant")
            return
        share = await self.transition(ctx, request.share_id, ShareState.REVOKED)
        if share is None:
            return
        share.reason = "revoked"
        ctx.emit(
            "share.revoked",
            ShareRevoked(
                share_id=share.share_id,
                method=share_method(share.method),
                requested_by=request.requested_by,
                reason=request.reason,
                revoked_at=now(),
            ),
        )
        ctx.log.info("share revoked", share_id=share.share_id)


def build(
    settings: Settings,
    directory_for: Callable[[AsyncSession], PatientDirectory] = SqlPatientDirectory,
) -> Service:
    dispatcher = Dispatcher(load_policies(settings.tenant_policy_file), directory_for)
    service = Service(NAME)
    service.on_invalid_data(dispatcher.reject_invalid)
    service.on_invalid_envelope("study.send.requested")(dispatcher.reject_envelope)
    service.handles("study.send.requested")(dispatcher.accept)
    service.handles("share.link.issued")(dispatcher.link_issued)
    service.handles("share.blume.published")(dispatcher.published)
    service.handles("share.notification.sent")(dispatcher.notified)
    service.handles("share.notification.suppressed")(dispatcher.suppressed)
    service.handles("share.notification.failed")(dispatcher.notification_failed)
    service.handles("share.notification.delayed")(dispatcher.delayed)
    service.handles("share.blume.withheld")(dispatcher.withheld)
    service.handles("share.revoke.requested")(dispatcher.revoke)
    service.handles("patient.account.updated")(project_account)
    return service


async def project_account(event: CloudEvent[PatientAccountUpdated], ctx: HandlerContext) -> None:
    """Keep the account projection the consent rules read."""
    await apply_account(ctx.session, event)


def main() -> None:
    serve([build])
