"""The dispatcher's writes to its shares, each one SQLAlchemy Core statement.

A move of the state machine is one ``UPDATE ... WHERE share_id = ? AND state IN (the states
that may become the new one) RETURNING`` the row: it takes the row lock that a ``SELECT ...
FOR UPDATE`` took, and checks ``Share.can_become`` in the database, in one round trip where
the ORM needed a SELECT, then a flush. A share no row came back for was unknown, or in a
state that may not move (a late or duplicate event); only then is it read, to say which.

No ``Share`` is ever loaded into the session: every write goes through here, so no stale copy
in the session's identity map can hide another handler's write in the same batch. The
statements are built once and run with ``blume_runtime.db.fetch`` (on PostgreSQL, on the
driver directly); only ``revoke_live``, built per call, runs through SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from blume_runtime.db import UtcDateTime, execute, fetch, utcnow
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Insert,
    Select,
    Table,
    Update,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_share_dispatcher.models import TERMINAL, TRANSITIONS, Share, ShareState

_SHARES: Final[Table] = Share.__table__  # type: ignore[attr-defined]
_COLUMNS: Final = tuple(column.key for column in _SHARES.c)
_TARGET: Final[BindParameter[str]] = bindparam("target_share_id")
"""The share a statement changes (not a column's name: those are the SET parameters)."""


def _earlier(column: ColumnElement[Any], moment: ColumnElement[Any]) -> ColumnElement[Any]:
    """The earlier of a nullable timestamp column and a moment (the moment if it is NULL)."""
    return case((or_(column.is_(None), column > moment), moment), else_=column)


def _later(column: ColumnElement[Any], moment: ColumnElement[Any]) -> ColumnElement[Any]:
    """The later of a nullable timestamp column and a moment (the moment if it is NULL)."""
    return case((or_(column.is_(None), column < moment), moment), else_=column)


def _moves() -> dict[ShareState, Update]:
    moves: dict[ShareState, Update] = {}
    for state in ShareState:
        sources = [source for source, targets in TRANSITIONS.items() if state in targets]
        if sources:
            # Equalities, not IN: a literal list is expanded at each execution, so a
            # statement holding one cannot be compiled once (``blume_runtime.statements``).
            may_move = or_(*(_SHARES.c.state == source for source in sources))
            moves[state] = (
                update(_SHARES).where(_SHARES.c.share_id == _TARGET, may_move).returning(*_SHARES.c)
            )
    return moves


# Built once, so each is compiled once per names of the parameters given (the columns an
# INSERT or UPDATE sets).
_INSERT: Final[Insert] = insert(_SHARES)
_MOVES: Final = _moves()
_REVOKE: Final[Update] = _MOVES[ShareState.REVOKED].where(
    _SHARES.c.tenant_id == bindparam("owner_tenant_id")
)
_FIRST_FAILED_AT: Final = bindparam("first_failed_at", type_=UtcDateTime)
_WAIT: Final[Update] = _MOVES[ShareState.WAITING].values(
    waiting_since=_earlier(_SHARES.c.waiting_since, _FIRST_FAILED_AT)
)
_SEEN_AT: Final = bindparam("seen_at", type_=UtcDateTime)
_OPENED: Final[Update] = (
    update(_SHARES)
    .where(_SHARES.c.share_id == _TARGET)
    .values(
        opened_count=_SHARES.c.opened_count + 1,
        first_opened_at=func.coalesce(_SHARES.c.first_opened_at, _SEEN_AT),
        last_opened_at=_later(_SHARES.c.last_opened_at, _SEEN_AT),
    )
    .returning(*_SHARES.c)
)
_ACCESSED: Final[Update] = (
    update(_SHARES)
    .where(_SHARES.c.share_id == _TARGET)
    .values(
        accessed_count=_SHARES.c.accessed_count + 1,
        last_accessed_at=_later(_SHARES.c.last_accessed_at, _SEEN_AT),
    )
    .returning(*_SHARES.c)
)
_OWNER: Final[Select[str, ShareState]] = select(_SHARES.c.tenant_id, _SHARES.c.state).where(
    _SHARES.c.share_id == _TARGET
)


async def _connection(session: AsyncSession) -> AsyncConnection:
    return await session.connection()


def _share(row: Any) -> Share:
    return Share(**row._asdict())


async def add(session: AsyncSession, share: Share) -> None:
    """Insert a new share (an answered request)."""
    values = {name: getattr(share, name) for name in _COLUMNS}
    await execute(session, _INSERT, values)


async def move(
    session: AsyncSession, share_id: str, state: ShareState, **columns: Any
) -> Share | None:
    """Move the share to ``state`` and set ``columns``, if its state may become ``state``;
    the share as it now is, or None (unknown, or its state may not move there)."""
    return await _changed(session, _MOVES[state], share_id, state=state, **columns)


async def revoke(session: AsyncSession, share_id: str, tenant_id: str) -> Share | None:
    """Revoke the share if it is the tenant's and its state may become revoked; the share as
    it now is, or None."""
    return await _changed(
        session,
        _REVOKE,
        share_id,
        state=ShareState.REVOKED,
        reason="revoked",
        owner_tenant_id=tenant_id,
    )


async def wait(
    session: AsyncSession, share_id: str, error_class: str, first_failed_at: datetime
) -> Share | None:
    """Move the share to waiting on ``error_class``, keeping the earliest failure's time."""
    return await _changed(
        session,
        _WAIT,
        share_id,
        state=ShareState.WAITING,
        reason=error_class,
        first_failed_at=first_failed_at,
    )


async def count_open(session: AsyncSession, share_id: str, seen_at: datetime) -> Share | None:
    """Count one opening of the share's link, at ``seen_at``; None for an unknown share."""
    return await _changed(session, _OPENED, share_id, stamp=False, seen_at=seen_at)


async def count_access(session: AsyncSession, share_id: str, seen_at: datetime) -> Share | None:
    """Count one access to the share's study, at ``seen_at``; None for an unknown share."""
    return await _changed(session, _ACCESSED, share_id, stamp=False, seen_at=seen_at)


async def revoke_live(
    session: AsyncSession, tenant_id: str, mrn: str, methods: Iterable[str], reason: str
) -> list[Share]:
    """Revoke every live share of these methods of the tenant's patient with this MRN; the
    shares revoked, in share id order (so that a rerun emits its events in the same order)."""
    statement = (
        update(_SHARES)
        .where(
            _SHARES.c.tenant_id == tenant_id,
            _SHARES.c.patient_mrn == mrn,
            _SHARES.c.method.in_(list(methods)),
            _SHARES.c.state.not_in(TERMINAL),
        )
        .values(state=ShareState.REVOKED, reason=reason, updated_at=utcnow())
        .returning(*_SHARES.c)
    )
    rows = await (await _connection(session)).execute(statement)
    return sorted((_share(row) for row in rows), key=lambda share: share.share_id)


async def owner(session: AsyncSession, share_id: str) -> tuple[str, ShareState] | None:
    """The share's tenant and state, or None if there is no such share."""
    rows = await fetch(session, _OWNER, {"target_share_id": share_id})
    return (rows[0].tenant_id, ShareState(rows[0].state)) if rows else None


async def _changed(
    session: AsyncSession, statement: Update, share_id: str, *, stamp: bool = True, **values: Any
) -> Share | None:
    if stamp:
        values["updated_at"] = utcnow()
    values["target_share_id"] = share_id
    rows = await fetch(session, statement, values)
    return _share(rows[0]) if rows else None
