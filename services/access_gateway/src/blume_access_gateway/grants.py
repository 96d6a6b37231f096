"""The one synchronous grant check, and granting uses of a link within its maximum.

``check_grant(session, handle, now, freshness)`` decides what a link is worth for one
request; the recipient's link page, the viewer's frame proxy and the sender's page all ask
it, and nothing else reads the link projection to decide access. It fails closed: while the
gateway's projections cannot show they are current (``freshness``), every handle is
``NOT_CURRENT`` ("try again shortly", 503), never granted on what may be stale data.
``check_entry_grant`` is the same decision for a patient's record entry on the portal.
``check_viewer_grant`` is ``check_grant`` for the viewer's image requests, with the access
session they come with: one prebuilt Core statement reads the session, its link and the
share's revocation (the ORM's reads cost about 7 % of the gateway's CPU per proxied image),
and the link's state is decided as ``check_grant`` decides it (``links.link_state``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from blume_contracts.events import AuthMethod
from sqlalchemy import bindparam, func
from sqlalchemy import select as core_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_access_gateway.freshness import FreshnessCheck
from blume_access_gateway.links import (
    LinkLookup,
    LinkState,
    link_state,
    look_up_link,
    look_up_token,
)
from blume_access_gateway.models import (
    BrowserSession,
    LinkGrant,
    ProjectedAccount,
    ProjectedEntry,
    ProjectedLink,
    ProjectedRevocation,
)
from blume_access_gateway.sessions import is_live, session_hash

_RACE_RETRIES: Final = 3


async def uses_so_far(session: AsyncSession, link_id: str) -> int:
    query = select(func.coalesce(func.max(LinkGrant.use_number), 0)).where(
        col(LinkGrant.link_id) == link_id
    )
    return int((await session.exec(query)).one())


def uses_left(max_uses: int | None, used: int) -> bool:
    return max_uses is None or used < max_uses


async def grant_use(
    session: AsyncSession,
    link_id: str,
    max_uses: int | None,
    auth_method: AuthMethod,
    now: datetime,
) -> int | None:
    """Record the next use and return its number, or None when no use is left.

    The (link, use number) key settles a race between two grants: the loser takes the
    next number, or finds none left.
    """
    for _ in range(_RACE_RETRIES):
        used = await uses_so_far(session, link_id)
        if not uses_left(max_uses, used):
            return None
        try:
            async with session.begin_nested():
                session.add(
                    LinkGrant(
                        link_id=link_id,
                        use_number=used + 1,
                        auth_method=auth_method,
                        granted_at=now,
                    )
                )
        except IntegrityError:
            continue
        return used + 1
    return None


@dataclass(frozen=True, slots=True)
class Token:
    """A link token as presented in ``/s/<token>``."""

    value: str


@dataclass(frozen=True, slots=True)
class LinkId:
    """A link named by a signed cookie (after a sign-in round trip)."""

    value: str


LinkHandle = Token | LinkId


async def check_grant(
    session: AsyncSession, handle: LinkHandle, now: datetime, freshness: FreshnessCheck
) -> LinkLookup:
    """What the link is worth now: usable, or why not (``NOT_CURRENT`` first of all)."""
    if await freshness.stale() is not None:
        return LinkLookup(LinkState.NOT_CURRENT, None)
    if isinstance(handle, Token):
        return await look_up_token(session, handle.value, now)
    return await look_up_link(session, handle.value, now)


@dataclass(frozen=True, slots=True)
class EntryGrant:
    entry: ProjectedEntry
    account: ProjectedAccount


class EntryRefusal(StrEnum):
    NOT_CURRENT = "not_current"
    NOT_SHOWN = "not_shown"
    """No such entry, someone else's, revoked, the account inactive or withholding its
    portal: one answer for all, so the reason does not leak."""


async def check_entry_grant(
    session: AsyncSession, entry_id: str, blume_patient_id: str, freshness: FreshnessCheck
) -> EntryGrant | EntryRefusal:
    """Whether this signed-in patient may see this entry of their record now."""
    if await freshness.stale() is not None:
        return EntryRefusal.NOT_CURRENT
    query = (
        select(ProjectedEntry, ProjectedAccount, ProjectedRevocation.revoked_at)
        .join(
            ProjectedAccount,
            col(ProjectedAccount.blume_patient_id) == col(ProjectedEntry.blume_patient_id),
        )
        .outerjoin(
            ProjectedRevocation,
            col(ProjectedRevocation.share_id) == col(ProjectedEntry.share_id),
        )
        .where(col(ProjectedEntry.entry_id) == entry_id)
    )
    row = (await session.exec(query)).first()
    if row is None:
        return EntryRefusal.NOT_SHOWN
    entry, account, revoked_at = row
    visible = (
        entry.blume_patient_id == blume_patient_id
        and revoked_at is None
        and account.active
        and account.tenant_id == entry.tenant_id
        and not account.withhold_portal
    )
    return EntryGrant(entry, account) if visible else EntryRefusal.NOT_SHOWN


_VIEWER_GRANT: Final = (
    core_select(
        col(BrowserSession.kind),
        col(BrowserSession.subject),
        col(BrowserSession.use_number),
        col(BrowserSession.ended_at),
        col(BrowserSession.expires_at),
        col(ProjectedLink.tenant_id),
        col(ProjectedLink.share_id),
        col(ProjectedLink.study_instance_uid),
        col(ProjectedLink.locale),
        col(ProjectedLink.correlation_id),
        col(ProjectedLink.traceparent),
        col(ProjectedLink.expires_at).label("link_expires_at"),
        col(ProjectedRevocation.revoked_at),
    )
    .select_from(BrowserSession)
    .outerjoin(ProjectedLink, col(ProjectedLink.link_id) == col(BrowserSession.subject))
    .outerjoin(
        ProjectedRevocation, col(ProjectedRevocation.share_id) == col(ProjectedLink.share_id)
    )
    .where(col(BrowserSession.session_hash) == bindparam("session_hash"))
)
"""An access session, its link and the link's revocation, by the session's key."""


@dataclass(frozen=True, slots=True)
class ViewerGrant:
    """What the viewer needs of a usable link, and who holds it (the access session)."""

    session_hash: str
    link_id: str
    use_number: int
    tenant_id: str
    share_id: str
    study_instance_uid: str | None
    locale: str
    correlation_id: str
    traceparent: str | None
    ends_at: datetime
    """When the session or the link ends by the clock, whichever is first."""


class ViewerRefusal(StrEnum):
    NO_SESSION = "no_session"
    """No live access session with a granted use: nothing to say about any link."""
    NOT_CURRENT = "not_current"
    UNKNOWN = "unknown"
    GONE = "gone"
    """The link was revoked or has expired."""


async def check_viewer_grant(
    session: AsyncSession,
    session_id: str,
    now: datetime,
    freshness: FreshnessCheck,
    may_hold: Callable[[str, int], bool],
) -> ViewerGrant | ViewerRefusal:
    """The link this access session holds, if usable now. ``may_hold(link_id, use_number)``
    is the caller's check that the session was asked for by the right handle; it runs
    before the link's state is told (a handle that is not the session's learns nothing)."""
    key = session_hash(session_id)
    connection = await session.connection()
    row = (await connection.execute(_VIEWER_GRANT, {"session_hash": key})).first()
    if row is None or not is_live(row, "access", now) or row.use_number is None:
        return ViewerRefusal.NO_SESSION
    if not may_hold(row.subject, row.use_number):
        return ViewerRefusal.NO_SESSION
    if await freshness.stale() is not None:
        return ViewerRefusal.NOT_CURRENT
    if row.share_id is None:
        return ViewerRefusal.UNKNOWN
    if link_state(row.link_expires_at, row.revoked_at, now) is not LinkState.USABLE:
        return ViewerRefusal.GONE
    return ViewerGrant(
        session_hash=key,
        link_id=row.subject,
        use_number=row.use_number,
        tenant_id=row.tenant_id,
        share_id=row.share_id,
        study_instance_uid=row.study_instance_uid,
        locale=row.locale,
        correlation_id=row.correlation_id,
        traceparent=row.traceparent,
        ends_at=min(row.expires_at, row.link_expires_at),
    )
