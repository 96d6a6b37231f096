"""What a presented link token is worth right now: unknown, expired, revoked or usable.

The link store (link_issuer's) says when a link expires and whether it was revoked; the
share's state (share_dispatcher's) says so first, the moment a revocation commits, before
link_issuer has caught up. Both are read in one indexed query, whatever the token, so an
unknown token costs the same work as a known one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from blume_contracts.sensitivity import fingerprint
from blume_link_issuer.models import SecureLink
from blume_link_issuer.tokens import token_hash
from blume_share_dispatcher.models import Share, ShareState
from sqlalchemy import ColumnElement
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession


class LinkState(StrEnum):
    USABLE = "usable"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class LinkLookup:
    state: LinkState
    link: SecureLink | None
    revoked_at: datetime | None = None

    @property
    def usable(self) -> bool:
        return self.state is LinkState.USABLE


def token_fingerprint(token: str) -> str:
    """How events refer to a presented token (to correlate guessing), never the token."""
    return fingerprint(token)


async def _look_up(
    session: AsyncSession, condition: ColumnElement[bool], now: datetime
) -> LinkLookup:
    query = (
        select(SecureLink, Share.state, Share.updated_at)
        .outerjoin(Share, col(Share.share_id) == col(SecureLink.share_id))
        .where(condition)
    )
    row = (await session.exec(query)).first()
    if row is None:
        return LinkLookup(LinkState.UNKNOWN, None)
    link, share_state, share_updated_at = row
    if link.revoked_at is not None:
        return LinkLookup(LinkState.REVOKED, link, link.revoked_at)
    if share_state == ShareState.REVOKED:
        return LinkLookup(LinkState.REVOKED, link, share_updated_at)
    if link.expires_at <= now:
        return LinkLookup(LinkState.EXPIRED, link)
    return LinkLookup(LinkState.USABLE, link)


async def look_up_token(session: AsyncSession, token: str, now: datetime) -> LinkLookup:
    """The link for a presented token: hashed, then one indexed read."""
    return await _look_up(session, col(SecureLink.token_hash) == token_hash(token), now)


async def look_up_link(session: AsyncSession, link_id: str, now: datetime) -> LinkLookup:
    """The link named in a signed cookie (after a sign-in round trip)."""
    return await _look_up(session, col(SecureLink.link_id) == link_id, now)
