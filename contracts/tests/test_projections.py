"""``keep_newest``: a projection keeps the newest state, whatever order the events come in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from blume_contracts.projections import keep_newest

_T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class _Row:
    key: str
    colour: str
    updated_at: datetime


class _Session:
    def __init__(self) -> None:
        self.rows: dict[Any, Any] = {}

    async def get(self, entity: type[Any], ident: Any, /) -> Any:
        return self.rows.get(ident)

    def add(self, instance: Any, /) -> None:
        self.rows[instance.key] = instance


async def test_an_older_state_arriving_late_changes_nothing() -> None:
    """A newer state replaces the row; an older one that arrives after it is dropped."""
    session = _Session()
    await keep_newest(session, _Row, "a", {"key": "a", "colour": "red", "updated_at": _T0})
    newer = _T0 + timedelta(seconds=1)
    await keep_newest(session, _Row, "a", {"key": "a", "colour": "blue", "updated_at": newer})
    await keep_newest(session, _Row, "a", {"key": "a", "colour": "green", "updated_at": _T0})
    assert session.rows["a"] == _Row("a", "blue", newer)
