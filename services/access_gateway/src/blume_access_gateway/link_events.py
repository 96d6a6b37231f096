"""The events the gateway writes about a recipient's link, each built from its projected row.

``access`` decides; this module says it: the event's data, and the envelope that ties it to
the share (tenant, correlation, trace), so the audit trail and the trace join the share's
other events. Each writes into the caller's unit of work, in the same transaction as the
decision, and counts itself in ``LINK_EVENTS``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from blume_contracts.events import (
    ClientContext,
    DenialReason,
    Recipient,
    ShareLinkAccessed,
    ShareLinkDenied,
    ShareLinkLocked,
    ShareLinkOpened,
    ShareOtpRequested,
)
from blume_contracts.locales import narrow_locale
from blume_runtime.metrics import LINK_EVENTS
from blume_runtime.unit_of_work import UnitOfWork

from blume_access_gateway.denial_tally import CountedDenials
from blume_access_gateway.events import UNKNOWN_TENANT, emit_for
from blume_access_gateway.links import token_fingerprint
from blume_access_gateway.models import ProjectedLink
from blume_access_gateway.sessions import AccessSession


def _for_email(link: ProjectedLink) -> dict[str, Any]:
    """What an event the notifier turns into an email says of the link: whose share, to
    whom, for which organisation, in which language."""
    return {
        "share_id": link.share_id,
        "link_id": link.link_id,
        "recipient": Recipient(name=link.recipient_name, email=link.recipient_email),
        "organisation": link.organisation,
        "locale": narrow_locale(link.locale),
    }


def opened(work: UnitOfWork, link: ProjectedLink, client: ClientContext) -> None:
    data = ShareLinkOpened(share_id=link.share_id, link_id=link.link_id, client=client)
    emit_for(work, "share.link.opened", data, link)
    LINK_EVENTS.labels(event="opened", reason="").inc()


def accessed(
    work: UnitOfWork,
    link: ProjectedLink,
    session: AccessSession,
    client: ClientContext,
    signed_in_as: str | None,
) -> None:
    data = ShareLinkAccessed(
        share_id=link.share_id,
        link_id=link.link_id,
        auth_method=session.auth_method,
        signed_in_as=signed_in_as,
        use_number=session.use_number,
        client=client,
        # The grant is what lets this browser see the sender's message (PHI).
        message_disclosed=link.message is not None,
    )
    emit_for(work, "share.link.accessed", data, link)
    LINK_EVENTS.labels(event="accessed", reason="").inc()


def denied(
    work: UnitOfWork,
    link: ProjectedLink | None,
    reason: DenialReason,
    client: ClientContext,
    token: str | None,
    correlation_id: str,
) -> None:
    """A refusal; of an unknown link, under the unknown tenant and the request's own id."""
    data = ShareLinkDenied(
        share_id=link.share_id if link else None,
        link_id=link.link_id if link else None,
        reason=reason,
        token_fingerprint=token_fingerprint(token) if token is not None else None,
        client=client,
    )
    if link is None:
        work.emit("share.link.denied", data, tenantid=UNKNOWN_TENANT, correlationid=correlation_id)
    else:
        emit_for(work, "share.link.denied", data, link)
    LINK_EVENTS.labels(event="denied", reason=reason).inc()


def code_requested(
    work: UnitOfWork,
    link: ProjectedLink,
    challenge_id: str,
    sealed_code: str,
    expires_at: datetime,
) -> None:
    """``share.otp.requested``: the notifier emails the recipient the sealed code."""
    data = ShareOtpRequested(
        **_for_email(link),
        challenge_id=challenge_id,
        sealed_code=sealed_code,
        expires_at=expires_at,
    )
    emit_for(work, "share.otp.requested", data, link)


def locked(work: UnitOfWork, link: ProjectedLink, sender_email: str, locked_at: datetime) -> None:
    """``share.link.locked``: the notifier emails the sender that only a new share helps."""
    data = ShareLinkLocked(
        **_for_email(link),
        sender_name=link.sender_name,
        sender_email=sender_email,
        locked_at=locked_at,
    )
    emit_for(work, "share.link.locked", data, link)


def counted_denials(work: UnitOfWork, bucket: CountedDenials[DenialReason]) -> None:
    """A client's further denials of unknown links for one reason in one minute, as one
    event with their count (the first of them was recorded on its own, by ``denied``)."""
    data = ShareLinkDenied(
        reason=bucket.reason,
        client=bucket.client,
        count=bucket.count,
        counted_from=bucket.minute,
    )
    correlation_id = f"denials-{uuid.uuid4()}"
    work.emit("share.link.denied", data, tenantid=UNKNOWN_TENANT, correlationid=correlation_id)
