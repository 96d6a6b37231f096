"""Emailed sign-in codes: six digits, ten minutes, five wrong tries, only the newest counts;
ten wrong codes over the link's life lock the link for good.

The code is kept as an HMAC keyed with a gateway-derived key (a million possible codes make
a plain hash trivial to reverse) and compared in constant time. Attempts are counted and
codes consumed with conditional UPDATEs, so two requests racing on one challenge cannot
both get a try past the limit or both use the same code.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from blume_runtime.db import UtcDateTime
from sqlalchemy import ColumnElement, case, func, literal
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_access_gateway.models import OtpChallenge

CODE_DIGITS: Final = 6
CODE_LIFETIME: Final = timedelta(minutes=10)
MAX_WRONG_CODES: Final = 5
MAX_WRONG_CODES_PER_LINK: Final = 10
"""Over every code of a link: "send a new code" resets the five tries of a code, not this.
Past it the link is locked (``code_attempts_exhausted``); only a new share helps."""


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def new_challenge_id() -> str:
    return f"otp_{secrets.token_hex(16)}"


def code_hash(key: bytes, challenge_id: str, code: str) -> str:
    return hmac.new(key, f"{challenge_id}:{code}".encode(), hashlib.sha256).hexdigest()


def normalise_code(entered: str) -> str:
    """What people type: spaces or a dash in the middle ("123 456") are forgiven."""
    return "".join(character for character in entered if character not in " -\t")


async def issue_challenge(
    session: AsyncSession, link_id: str, key: bytes, now: datetime
) -> tuple[OtpChallenge, str]:
    """A new code for the link; every earlier code of the link stops counting."""
    await session.exec(
        update(OtpChallenge)
        .where(
            col(OtpChallenge.link_id) == link_id,
            col(OtpChallenge.superseded_at).is_(None),
            col(OtpChallenge.consumed_at).is_(None),
        )
        .values(superseded_at=now)
    )
    code = new_code()
    challenge_id = new_challenge_id()
    challenge = OtpChallenge(
        challenge_id=challenge_id,
        link_id=link_id,
        code_hash=code_hash(key, challenge_id, code),
        created_at=now,
        expires_at=now + CODE_LIFETIME,
    )
    session.add(challenge)
    return challenge, code


async def wrong_codes_of_link(
    session: AsyncSession, link_id: str, *, besides: str | None = None
) -> int:
    """Wrong codes entered for the link, over all its codes (except ``besides``)."""
    statement = select(func.coalesce(func.sum(OtpChallenge.attempts), 0)).where(
        col(OtpChallenge.link_id) == link_id
    )
    if besides is not None:
        statement = statement.where(col(OtpChallenge.challenge_id) != besides)
    return int((await session.exec(statement)).one())


async def link_exhausted(session: AsyncSession, link_id: str) -> bool:
    """Whether the link has had its lifetime's wrong codes: no new code is sent for it."""
    return await wrong_codes_of_link(session, link_id) >= MAX_WRONG_CODES_PER_LINK


def _tries_allowed(earlier_wrong: int) -> int:
    """A code's tries: five, or what the link's lifetime has left if that is fewer.

    Only the newest code of a link takes tries, so the earlier codes' counts are settled
    and the conditional UPDATE on this one row keeps racing requests within both limits.
    """
    return max(0, min(MAX_WRONG_CODES, MAX_WRONG_CODES_PER_LINK - earlier_wrong))


def _open_for_tries(
    challenge_id: str, now: datetime, allowed: int
) -> tuple[ColumnElement[bool], ...]:
    return (
        col(OtpChallenge.challenge_id) == challenge_id,
        col(OtpChallenge.locked_at).is_(None),
        col(OtpChallenge.superseded_at).is_(None),
        col(OtpChallenge.consumed_at).is_(None),
        col(OtpChallenge.expires_at) > now,
        col(OtpChallenge.attempts) < allowed,
    )


async def _state(
    session: AsyncSession, challenge_id: str, now: datetime, earlier_wrong: int
) -> CodeCheck:
    challenge = await session.get(OtpChallenge, challenge_id, populate_existing=True)
    if challenge is None:
        return CodeCheck(CodeVerdict.EXPIRED)
    if earlier_wrong + challenge.attempts >= MAX_WRONG_CODES_PER_LINK:
        return CodeCheck(CodeVerdict.EXHAUSTED)
    if challenge.locked_at is not None:
        return CodeCheck(CodeVerdict.LOCKED)
    if (
        challenge.superseded_at is not None
        or challenge.consumed_at is not None
        or challenge.expires_at <= now
    ):
        return CodeCheck(CodeVerdict.EXPIRED)
    return CodeCheck(CodeVerdict.WRONG, _tries_allowed(earlier_wrong) - challenge.attempts)


@dataclass(frozen=True, slots=True)
class CodeCheck:
    """The verdict on one entered code, and the tries its code has left after it."""

    verdict: CodeVerdict
    tries_left: int = 0
    newly_exhausted: bool = False
    """This very wrong code was the link's last: it is locked now (tell the sender once)."""


class CodeVerdict(StrEnum):
    ACCEPTED = "accepted"
    WRONG = "wrong_code"
    LOCKED = "locked"
    EXHAUSTED = "code_attempts_exhausted"
    """The link's lifetime of wrong codes is spent: the link is locked."""
    EXPIRED = "code_expired"
    """Expired, replaced by a newer code, already used, or not this link's."""


async def check_code(
    session: AsyncSession,
    *,
    challenge_id: str,
    link_id: str,
    entered: str,
    key: bytes,
    now: datetime,
) -> CodeCheck:
    """Use the code if it is right and the challenge still open; count a wrong one."""
    challenge = await session.get(OtpChallenge, challenge_id)
    if challenge is None or challenge.link_id != link_id:
        return CodeCheck(CodeVerdict.EXPIRED)
    earlier = await wrong_codes_of_link(session, link_id, besides=challenge_id)
    allowed = _tries_allowed(earlier)
    state = await _state(session, challenge_id, now, earlier)
    if state.verdict is not CodeVerdict.WRONG:
        return state  # locked or no longer open: the code is not even compared
    right = hmac.compare_digest(
        code_hash(key, challenge_id, normalise_code(entered)), challenge.code_hash
    )
    if right:
        used = await session.exec(
            update(OtpChallenge)
            .where(*_open_for_tries(challenge_id, now, allowed))
            .values(consumed_at=now)
        )
        if used.rowcount == 1:
            return CodeCheck(CodeVerdict.ACCEPTED)
        return await _state(session, challenge_id, now, earlier)  # a concurrent request won
    counted = await session.exec(
        update(OtpChallenge)
        .where(*_open_for_tries(challenge_id, now, allowed))
        .values(
            attempts=col(OtpChallenge.attempts) + 1,
            locked_at=case(
                (col(OtpChallenge.attempts) + 1 >= allowed, literal(now, UtcDateTime())),
                else_=None,
            ),
        )
    )
    state = await _state(session, challenge_id, now, earlier)
    if state.verdict is CodeVerdict.EXHAUSTED and counted.rowcount == 1:
        return CodeCheck(CodeVerdict.EXHAUSTED, newly_exhausted=True)
    return state
