"""Server-side browser sessions: started at a grant or a sign-in, ended by sign-out or by
their absolute lifetime, never slid.

A session's cookie holds only a random id (``secrets.token_urlsafe``); the table keeps its
SHA-256, so the database holds no live credential. Whatever kind a session is (a
recipient's access to one link, a patient's portal, later a sender's page), the same three
steps apply: ``start_session``, ``live_session`` and ``end_session``. Ending is
server-side: a cookie copied before sign-out is worth nothing afterwards.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal, Protocol

from blume_contracts.events import AuthMethod
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_access_gateway.models import BrowserSession

SessionKind = Literal["access", "patient", "sender"]
ACCESS_SESSION_MAX: Final = timedelta(minutes=30)
"""A recipient's access after a grant: at most this long from the grant (a tenant policy's
``access_session_minutes`` may shorten it, never lengthen it)."""
PATIENT_SESSION_MAX: Final = timedelta(minutes=30)


def session_hash(session_id: str) -> str:
    """The key a session's row is kept under (never the cookie's id itself)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionTimes(Protocol):
    """What decides whether a session is live: a ``BrowserSession``, or a row read with
    the same column names."""

    @property
    def kind(self) -> str: ...

    @property
    def ended_at(self) -> datetime | None: ...

    @property
    def expires_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class StartedSession:
    session_id: str
    """For the cookie only: the table keeps its hash."""
    row: BrowserSession


@dataclass(frozen=True, slots=True)
class NewSession:
    """What a session is started for: its kind, its subject (the link id, or the Blume
    patient id) and how long it lives; for a recipient's access, also the tenant, the use
    it was granted and how the recipient passed."""

    kind: SessionKind
    subject: str
    lifetime: timedelta
    tenant_id: str | None = None
    use_number: int | None = None
    auth_method: str | None = None


async def start_session(session: AsyncSession, new: NewSession, now: datetime) -> StartedSession:
    session_id = secrets.token_urlsafe(32)
    row = BrowserSession(
        session_hash=session_hash(session_id),
        started_at=now,
        expires_at=now + new.lifetime,
        kind=new.kind,
        subject=new.subject,
        tenant_id=new.tenant_id,
        use_number=new.use_number,
        auth_method=new.auth_method,
    )
    session.add(row)
    await session.flush()
    return StartedSession(session_id, row)


@dataclass(frozen=True, slots=True)
class AccessSession:
    """A recent grant in this browser: the server-side session its ``access`` cookie names."""

    link_id: str
    use_number: int
    auth_method: AuthMethod


async def live_session(
    session: AsyncSession, kind: SessionKind, session_id: str | None, now: datetime
) -> BrowserSession | None:
    """The session of this kind the id names, while neither ended nor past its lifetime."""
    if not session_id:
        return None
    row = await session.get(BrowserSession, session_hash(session_id))
    if row is None or not is_live(row, kind, now):
        return None
    return row


def is_live(row: SessionTimes, kind: SessionKind, now: datetime) -> bool:
    """Whether a session row is of this kind, not ended and not past its lifetime."""
    return row.kind == kind and row.ended_at is None and row.expires_at > now


async def end_session(
    session: AsyncSession, session_id: str | None, now: datetime
) -> BrowserSession | None:
    """End the session the id names; the row if it was live (for the audit record)."""
    if not session_id:
        return None
    row = await session.get(BrowserSession, session_hash(session_id))
    if row is None or row.ended_at is not None or row.expires_at <= now:
        return None
    row.ended_at = now
    session.add(row)
    return row
