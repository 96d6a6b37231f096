"""The one synchronous grant check, and granting uses of a link within its maximum.

``check_grant(session, handle, now, freshness)`` decides what a link is worth for one
request; the recipient's link page, the viewer's frame proxy and the sender's page all ask
it, and nothing else reads the link projection to decide access. It fails closed: while the
gateway's projections cannot show they are current (``freshness``), every handle is
``NOT_CURRENT`` ("try again shortly", 503), never granted on what may be stale data.
``check_entry_grant`` is the same decision for a patient's record entry on the portal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from blume_contracts.events import AuthMethod
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_access_gateway.freshness import FreshnessCheck
from blume_access_gateway.links import LinkLookup, LinkState, look_up_link, look_up_token
from blume_access_gateway.models import (
    LinkGrant,
    ProjectedAccount,
    ProjectedEntry,
    ProjectedRevocation,
)

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
