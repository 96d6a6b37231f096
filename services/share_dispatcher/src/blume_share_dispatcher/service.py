"""share_dispatcher: validates share requests and owns each share's state."""

from __future__ import annotations

from blume_contracts.envelope import CloudEvent, RawEvent, now
from blume_contracts.events import (
    ShareAccepted,
    ShareCompleted,
    ShareFailed,
    ShareLinkIssued,
    ShareLinkRequested,
    ShareNotificationFailed,
    ShareNotificationSent,
    ShareRejected,
    StudySendRequested,
)
from blume_runtime.app import serve
from blume_runtime.db import utcnow
from blume_runtime.service import HandlerContext, PermanentError, Service
from blume_runtime.settings import Settings
from pydantic import ValidationError

from blume_share_dispatcher.models import Share, ShareState
from blume_share_dispatcher.policy import load_policies
from blume_share_dispatcher.rules import (
    Rejection,
    check_policy,
    expiry,
    rejection_for,
    share_id_for,
)

NAME = "share_dispatcher"


def build(settings: Settings) -> Service:
    service = Service(NAME)
    policies = load_policies(settings.tenant_policy_file)

    async def reject(request: RawEvent, rejection: Rejection, ctx: HandlerContext) -> None:
        share_id = share_id_for(request)
        method = request.data.get("method") if isinstance(request.data, dict) else None
        ctx.session.add(
            Share(
                share_id=share_id,
                tenant_id=request.tenantid,
                method=method if isinstance(method, str) else "unknown",
                state=ShareState.REJECTED,
                reason=rejection.reason.value,
                correlation_id=request.correlationid,
                request_source=request.source,
                request_id=request.id,
            )
        )
        ctx.emit(
            "share.rejected",
            ShareRejected(
                share_id=share_id,
                reason=rejection.reason,
                message=rejection.message,
                field=rejection.field,
            ),
        )
        ctx.log.info("share rejected", share_id=share_id, reason=rejection.reason.value)

    @service.on_invalid_data
    async def reject_invalid(
        request: RawEvent, error: ValidationError, ctx: HandlerContext
    ) -> None:
        if request.type != "study.send.requested":
            # Our own events breaking their contract is a bug: keep the message for ops.
            raise PermanentError(f"{request.type} breaks its contract")
        await reject(request, rejection_for(error), ctx)

    @service.handles("study.send.requested")
    async def accept(event: CloudEvent[StudySendRequested], ctx: HandlerContext) -> None:
        request = event.data
        verdict = check_policy(request, event.tenantid, policies)
        if isinstance(verdict, Rejection):
            await reject(event, verdict, ctx)
            return
        share_id = share_id_for(event)
        expires_at = expiry(request, verdict, now())
        recipient = request.recipient
        assert recipient is not None  # the contract requires it for external_link
        ctx.session.add(
            Share(
                share_id=share_id,
                tenant_id=request.tenant_id,
                method=request.method,
                state=ShareState.ACCEPTED,
                correlation_id=event.correlationid,
                request_source=event.source,
                request_id=event.id,
                expires_at=expires_at,
            )
        )
        ctx.emit(
            "share.accepted",
            ShareAccepted(share_id=share_id, method=request.method, expires_at=expires_at),
        )
        ctx.emit(
            "share.link.requested",
            ShareLinkRequested(
                share_id=share_id,
                tenant_id=request.tenant_id,
                study_instance_uid=request.study.study_instance_uid,
                recipient=recipient,
                sender=request.sender,
                organisation=verdict.display_name,
                message=request.message,
                locale=request.locale,
                expires_at=expires_at,
            ),
        )
        ctx.log.info("share accepted", share_id=share_id, expires_at=expires_at)

    async def transition(ctx: HandlerContext, share_id: str, state: ShareState) -> Share | None:
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

    @service.handles("share.link.issued")
    async def link_issued(event: CloudEvent[ShareLinkIssued], ctx: HandlerContext) -> None:
        await transition(ctx, event.data.share_id, ShareState.LINK_ISSUED)

    @service.handles("share.notification.sent")
    async def notified(event: CloudEvent[ShareNotificationSent], ctx: HandlerContext) -> None:
        share = await transition(ctx, event.data.share_id, ShareState.COMPLETED)
        if share is None:
            return
        share.notification_message_id = event.data.message_id
        ctx.emit(
            "share.completed",
            ShareCompleted(
                share_id=share.share_id,
                method="external_link" if share.method == "external_link" else "blume",
                completed_at=now(),
                notification_message_id=event.data.message_id,
            ),
        )

    @service.handles("share.notification.failed")
    async def notification_failed(
        event: CloudEvent[ShareNotificationFailed], ctx: HandlerContext
    ) -> None:
        share = await transition(ctx, event.data.share_id, ShareState.FAILED)
        if share is None:
            return
        share.reason = event.data.reason
        ctx.emit(
            "share.failed",
            ShareFailed(
                share_id=share.share_id,
                reason=event.data.reason,
                message="the notification email could not be delivered",
                failed_at=now(),
            ),
        )

    return service


def main() -> None:
    serve([build])
