"""The rule every projection of another service's state follows, written once.

A projection is a consumer's own copy of what a producer announces (``patient.account.updated``
into the dispatcher's and the gateway's account tables). Events can arrive out of order, so a
row keeps the newest state by the event's ``updated_at``: an older copy arriving late changes
nothing. Plain Python over a session's ``get``/``add``: the contracts stay free of any
database library, and each service keeps its own table.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol, TypeVar


class Versioned(Protocol):
    updated_at: datetime


_Row = TypeVar("_Row", bound=Versioned)


class ProjectionSession(Protocol):
    """What ``keep_newest`` needs of a database session (SQLModel's ``AsyncSession`` fits)."""

    async def get(self, entity: type[_Row], ident: Any, /) -> _Row | None: ...

    def add(self, instance: Any, /) -> None: ...


async def keep_newest(
    session: ProjectionSession, model: type[_Row], key: Any, state: Mapping[str, Any]
) -> None:
    """Insert or update the row ``key`` of ``model`` to ``state`` (which holds ``updated_at``),
    unless the row already holds a state as new or newer."""
    row = await session.get(model, key)
    if row is not None and row.updated_at >= state["updated_at"]:
        return
    if row is None:
        row = model(**state)
    else:
        for name, value in state.items():
            setattr(row, name, value)
    session.add(row)
