"""What a presented link token is worth right now: unknown, expired, revoked or usable.

Read from the gateway's own projections: the link as ``share.link.issued`` described it and
its share's revocation (``share.revoked``), in one indexed query whatever the token, so an
unknown token costs the same work as a known one. ``grants.check_grant`` is the one entry
point: it first refuses when the projections cannot show they are current.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from blume_contracts.sensitivity import fingerprint
from blume_contracts.tokens import token_hash
from sqlalchemy import ColumnElement
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_access_gateway.models import ProjectedLink, ProjectedRevocation


@dataclass(frozen=True, slots=True)
class LinkLookup:
    """What a presented link is worth now: its state and, when known, the link (and when
    its share was revoked)."""

    state: LinkState
    link: ProjectedLink | None
    revoked_at: datetime | None = None

    @property
    def usable(self) -> bool:
        return self.state is LinkState.USABLE


class LinkState(StrEnum):
    USABLE = "usable"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    NOT_CURRENT = "not_current"
    """The projections are behind their events or cut off from them: try again shortly."""


def token_fingerprint(token: str) -> str:
    """How events refer to a presented token (to correlate guessing), never the token."""
    return fingerprint(token)


async def _look_up(
    session: AsyncSession, condition: ColumnElement[bool], now: datetime
) -> LinkLookup:
    query = (
        select(ProjectedLink, ProjectedRevocation.revoked_at)
        .outerjoin(
            ProjectedRevocation,
            col(ProjectedRevocation.share_id) == col(ProjectedLink.share_id),
        )
        .where(condition)
    )
    row = (await session.exec(query)).first()
    if row is None:
        return LinkLookup(LinkState.UNKNOWN, None)
    link, revoked_at = row
    return LinkLookup(link_state(link.expires_at, revoked_at, now), link, revoked_at)


def link_state(expires_at: datetime, revoked_at: datetime | None, now: datetime) -> LinkState:
    """What a known link is worth now: revoked first, then expired, else usable."""
    if revoked_at is not None:
        return LinkState.REVOKED
    if expires_at <= now:
        return LinkState.EXPIRED
    return LinkState.USABLE


async def look_up_token(session: AsyncSession, token: str, now: datetime) -> LinkLookup:
    """The link for a presented token: hashed, then one indexed read."""
    return await _look_up(session, col(ProjectedLink.token_hash) == token_hash(token), now)


async def look_up_link(session: AsyncSession, link_id: str, now: datetime) -> LinkLookup:
    """The link named in a signed cookie (after a sign-in round trip)."""
    return await _look_up(session, col(ProjectedLink.link_id) == link_id, now)
