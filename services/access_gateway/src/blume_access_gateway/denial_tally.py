"""Denials of requests that name no link, aggregated: per client address and reason, per
minute, one record with a count.

An unknown token is the shape of a guessing flood, and each denial is kept for years in the
audit trail. The first denial of each (address, reason, minute) is recorded at once, as
before, so the evidence survives even a crash; the others of that minute are only counted,
and recorded as one ``share.link.denied`` with their ``count`` once the minute is over (or
when the gateway stops). Past ``MAX_BUCKETS`` open buckets (a flood from very many
addresses) every denial is recorded on its own again: memory stays bounded, nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Generic, TypeVar

from blume_contracts.events import ClientContext
from blume_runtime.unit_of_work import UnitOfWork, UnitsOfWork

MAX_BUCKETS: Final = 10_000

Reason = TypeVar("Reason", bound=str)
"""What the tally counts by: a link's ``DenialReason``, a portal entry's refusal."""


@dataclass(slots=True)
class CountedDenials(Generic[Reason]):
    """Denials of one client (and subject: the signed-in patient, if any) and reason in one
    minute, beyond the first (already recorded)."""

    client: ClientContext
    reason: Reason
    minute: datetime
    count: int = 0
    subject: str = ""


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


class DenialTally(Generic[Reason]):
    def __init__(self, max_buckets: int = MAX_BUCKETS) -> None:
        self._buckets: dict[tuple[str, str, str, datetime], CountedDenials[Reason]] = {}
        self._max_buckets = max_buckets

    def record_now(
        self, client: ClientContext, reason: Reason, now: datetime, subject: str = ""
    ) -> bool:
        """True: record this denial now (the first of its minute, or no room to count it);
        False: it was counted, for the minute's aggregate record."""
        key = (client.client_ip, reason, subject, minute_of(now))
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.count += 1
            return False
        if len(self._buckets) < self._max_buckets:
            self._buckets[key] = CountedDenials(client, reason, key[3], subject=subject)
        return True

    def due(self, now: datetime, *, everything: bool = False) -> list[CountedDenials[Reason]]:
        """The buckets of minutes that are over (all of them with ``everything``), taken out;
        only those that counted something."""
        current = minute_of(now)
        done = [key for key in self._buckets if everything or key[3] < current]
        taken = [self._buckets.pop(key) for key in done]
        return [bucket for bucket in taken if bucket.count > 0]

    def restore(self, buckets: list[CountedDenials[Reason]]) -> None:
        """Put back counts whose record could not be written: the next round retries."""
        for bucket in buckets:
            key = (bucket.client.client_ip, bucket.reason, bucket.subject, bucket.minute)
            kept = self._buckets.setdefault(
                key, CountedDenials(bucket.client, bucket.reason, key[3], subject=bucket.subject)
            )
            kept.count += bucket.count

    async def record_due(
        self,
        events: UnitsOfWork,
        now: datetime,
        record: Callable[[UnitOfWork, CountedDenials[Reason]], None],
        *,
        everything: bool = False,
    ) -> int:
        """``record`` each bucket of a finished minute (``everything``: the current minute
        too, on stopping) in one transaction; the counts are put back if it fails. How many
        buckets were recorded."""
        due = self.due(now, everything=everything)
        if not due:
            return 0
        try:
            async with events.unit_of_work() as work:
                for bucket in due:
                    record(work, bucket)
        except BaseException:
            self.restore(due)
            raise
        return len(due)
