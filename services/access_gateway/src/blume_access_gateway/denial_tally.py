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

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from blume_contracts.events import ClientContext, DenialReason

MAX_BUCKETS: Final = 10_000


@dataclass(slots=True)
class CountedDenials:
    """Denials of one client and reason in one minute, beyond the first (already recorded)."""

    client: ClientContext
    reason: DenialReason
    minute: datetime
    count: int = 0


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


class DenialTally:
    def __init__(self, max_buckets: int = MAX_BUCKETS) -> None:
        self._buckets: dict[tuple[str, str, datetime], CountedDenials] = {}
        self._max_buckets = max_buckets

    def record_now(self, client: ClientContext, reason: DenialReason, now: datetime) -> bool:
        """True: record this denial now (the first of its minute, or no room to count it);
        False: it was counted, for the minute's aggregate record."""
        key = (client.client_ip, reason, minute_of(now))
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.count += 1
            return False
        if len(self._buckets) < self._max_buckets:
            self._buckets[key] = CountedDenials(client, reason, key[2])
        return True

    def due(self, now: datetime, *, everything: bool = False) -> list[CountedDenials]:
        """The buckets of minutes that are over (all of them with ``everything``), taken out;
        only those that counted something."""
        current = minute_of(now)
        done = [key for key in self._buckets if everything or key[2] < current]
        taken = [self._buckets.pop(key) for key in done]
        return [bucket for bucket in taken if bucket.count > 0]

    def restore(self, buckets: list[CountedDenials]) -> None:
        """Put back counts whose record could not be written: the next round retries."""
        for bucket in buckets:
            key = (bucket.client.client_ip, bucket.reason, bucket.minute)
            kept = self._buckets.setdefault(
                key, CountedDenials(bucket.client, bucket.reason, key[2])
            )
            kept.count += bucket.count
