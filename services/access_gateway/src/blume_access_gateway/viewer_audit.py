"""What viewing records, as IHE BALP events in the share's envelope: a Read
(``share.images.viewed``) once per series per viewing session, whichever replica serves
it (a ``SeriesRead`` row, inserted if absent in the same transaction as the event); an
Export (``share.images.exported``) for a download; ``share.images.unavailable`` when the
study is not, or no longer, on the PACS."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal, TypeVar

from blume_contracts.events import (
    ClientContext,
    ShareImagesExported,
    ShareImagesUnavailable,
    ShareImagesViewed,
)
from blume_runtime.unit_of_work import UnitsOfWork
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_access_gateway.events import emit_for
from blume_access_gateway.models import SeriesRead

if TYPE_CHECKING:
    from blume_access_gateway.viewer import Scope

K = TypeVar("K")
V = TypeVar("V")
CACHE_ENTRIES: Final = 10_000
"""How many entries a per-process viewer cache keeps at most (the oldest go first)."""


def bounded_put(cache: OrderedDict[K, V], key: K, value: V, entries: int = CACHE_ENTRIES) -> None:
    """Newest last; the oldest go past ``entries``."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > entries:
        cache.popitem(last=False)


@dataclass(kw_only=True)
class ViewerAudit:
    """The viewer's events, each in its own unit of work; ``_seen`` spares the Read's
    insert for what this process already recorded."""

    events: UnitsOfWork
    clock: Callable[[], datetime]
    _seen: OrderedDict[tuple[str, str, int], None] = field(default_factory=OrderedDict)

    def _access_fields(self, scope: Scope, client: ClientContext) -> dict[str, object]:
        return {
            "share_id": scope.share_id,
            "audience": scope.audience,
            "link_id": scope.link_id,
            "use_number": scope.use_number,
            "entry_id": scope.entry_id,
            "blume_patient_id": scope.blume_patient_id,
            "client": client,
        }

    async def _record(self, event_type: str, scope: Scope, data: BaseModel) -> None:
        async with self.events.unit_of_work() as work:
            emit_for(work, event_type, data, scope)

    async def series_opened(
        self, scope: Scope, series: int, instances: int, client: ClientContext
    ) -> None:
        """BALP Read, once per series per viewing session, whichever replica serves it: the
        first to insert the session's ``SeriesRead`` row emits, in the same transaction."""
        key = (scope.session_hash, scope.handle, series)
        if key in self._seen:
            return
        # Marked before the write, so parallel first requests here try the insert once.
        bounded_put(self._seen, key, None)
        data = ShareImagesViewed.model_validate(
            {**self._access_fields(scope, client), "series_number": series, "instances": instances}
        )
        try:
            async with self.events.unit_of_work() as work:
                if await _first_read(work.session, key, self.clock()):
                    emit_for(work, "share.images.viewed", data, scope)
        except BaseException:
            self._seen.pop(key, None)
            raise

    def series_seen(self, scope: Scope, series: int) -> bool:
        """Recorded already, as far as this process knows (then nothing is written)."""
        return (scope.session_hash, scope.handle, series) in self._seen

    async def unavailable(
        self,
        scope: Scope,
        reason: Literal["not_on_pacs", "pacs_unreachable"],
        client: ClientContext,
    ) -> None:
        await self._record(
            "share.images.unavailable",
            scope,
            ShareImagesUnavailable.model_validate(
                {**self._access_fields(scope, client), "reason": reason}
            ),
        )

    async def exported(self, scope: Scope, instances: int, client: ClientContext) -> None:
        await self._record(
            "share.images.exported",
            scope,
            ShareImagesExported.model_validate(
                {**self._access_fields(scope, client), "instances": instances}
            ),
        )


async def _first_read(session: AsyncSession, key: tuple[str, str, int], now: datetime) -> bool:
    """Insert the session's read of the series unless a replica did: True if this did."""
    session_hash, handle, series = key
    if await session.get(SeriesRead, key) is not None:
        return False
    try:
        async with session.begin_nested():
            session.add(
                SeriesRead(
                    session_hash=session_hash, handle=handle, series_number=series, read_at=now
                )
            )
    except IntegrityError:
        return False
    return True


__all__ = ["ViewerAudit", "bounded_put"]
