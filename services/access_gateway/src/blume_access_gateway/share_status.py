"""Each share's progress as its events tell the gateway: the sender's status view and the
share API read ``ProjectedShareStatus``, never another service's tables.

Events of different producers may arrive in any order, so a state only moves forward
(``_RANK``); the counters and timestamps are kept whatever the order.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from blume_contracts.envelope import CloudEvent
from blume_contracts.events import (
    ShareAccepted,
    ShareBlumeViewed,
    ShareCompleted,
    ShareFailed,
    ShareLinkIssued,
    ShareNotificationFailed,
    ShareNotificationSent,
    ShareRejected,
    ShareRevoked,
)
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_access_gateway.models import ProjectedShareStatus

_RANK: Final = {
    "requested": 0,
    "accepted": 1,
    "link_issued": 2,
    "sent": 3,
    "completed": 4,
    "failed": 5,
    "rejected": 5,
    "revoked": 6,
}
"""How far along each state is; ``failed``, ``rejected`` and ``revoked`` are final."""


def advance(status: ProjectedShareStatus, state: str) -> None:
    if _RANK[state] > _RANK[status.state]:
        status.state = state


async def _status_of(session: AsyncSession, share_id: str, tenant_id: str) -> ProjectedShareStatus:
    status = await session.get(ProjectedShareStatus, share_id)
    return status or ProjectedShareStatus(share_id=share_id, tenant_id=tenant_id)


def _earliest(current: datetime | None, moment: datetime) -> datetime:
    return moment if current is None or moment < current else current


def _latest(current: datetime | None, moment: datetime) -> datetime:
    return moment if current is None or moment > current else current


def _accepted(status: ProjectedShareStatus, data: ShareAccepted, at: datetime) -> None:
    status.method = data.method
    status.accepted_at = at
    status.expires_at = data.expires_at
    advance(status, "accepted")


def _rejected(status: ProjectedShareStatus, data: ShareRejected, _at: datetime) -> None:
    status.reason = data.reason.value
    status.reason_text = data.message
    advance(status, "rejected")


def _link_issued(status: ProjectedShareStatus, data: ShareLinkIssued, at: datetime) -> None:
    status.link_issued_at = at
    status.expires_at = data.expires_at
    advance(status, "link_issued")


def _sent(status: ProjectedShareStatus, data: ShareNotificationSent, _at: datetime) -> None:
    if data.purpose == "share":  # a sign-in code's email is not the share's
        status.email_sent_at = data.accepted_at
        advance(status, "sent")


def _notification_failed(
    status: ProjectedShareStatus, data: ShareNotificationFailed, _at: datetime
) -> None:
    if data.purpose == "share":
        status.reason = data.reason
        status.reason_text = data.detail


def _completed(status: ProjectedShareStatus, data: ShareCompleted, _at: datetime) -> None:
    status.method = data.method
    status.completed_at = data.completed_at
    advance(status, "completed")


def _failed(status: ProjectedShareStatus, data: ShareFailed, _at: datetime) -> None:
    status.reason = data.reason
    status.reason_text = data.message
    advance(status, "failed")


def _revoked(status: ProjectedShareStatus, data: ShareRevoked, _at: datetime) -> None:
    status.method = data.method
    status.revoked_at = data.revoked_at
    advance(status, "revoked")


def _opened(status: ProjectedShareStatus, _data: object, at: datetime) -> None:
    status.opened_count += 1
    status.first_opened_at = _earliest(status.first_opened_at, at)
    status.last_opened_at = _latest(status.last_opened_at, at)


def _accessed(status: ProjectedShareStatus, _data: object, at: datetime) -> None:
    status.accessed_count += 1
    status.last_accessed_at = _latest(status.last_accessed_at, at)


def _viewed(status: ProjectedShareStatus, data: ShareBlumeViewed, at: datetime) -> None:
    """The patient opened the study in their Blume record: an opening and an access."""
    _opened(status, data, at)
    _accessed(status, data, at)


_CHANGES: Final[dict[str, Callable[[ProjectedShareStatus, Any, datetime], None]]] = {
    "share.accepted": _accepted,
    "share.rejected": _rejected,
    "share.link.issued": _link_issued,
    "share.notification.sent": _sent,
    "share.notification.failed": _notification_failed,
    "share.completed": _completed,
    "share.failed": _failed,
    "share.revoked": _revoked,
    "share.link.opened": _opened,
    "share.link.accessed": _accessed,
    "share.blume.viewed": _viewed,
}
STATUS_EVENTS: Final = frozenset(_CHANGES)


async def apply_status(session: AsyncSession, event: CloudEvent[Any]) -> None:
    """Move the share's status on by ``event`` (one of ``STATUS_EVENTS``).

    The runtime's inbox drops redeliveries, so counting opens and accesses here counts each
    event once.
    """
    if event.data.share_id is None:  # a view of an entry whose share the viewer did not name
        return
    status = await _status_of(session, event.data.share_id, event.tenantid)
    _CHANGES[event.type](status, event.data, event.time)
    session.add(status)
