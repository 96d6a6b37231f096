"""Granting access through a link, within the policy's maximum number of uses."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from blume_contracts.events import AuthMethod
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_access_gateway.models import LinkGrant

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
