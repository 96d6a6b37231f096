"""Whether the gateway's projections are current enough to grant access: fail closed.

The projections (links, revocations, accounts, entries) are fed by the gateway's own
consumer. A revocation or a lock box that has not been applied yet must not be outrun by a
grant, so every grant check first asks ``Freshness.stale``. The answer is "stale" when:

- the gateway's consumer is not attached to its queue (broker down, queue lost); or
- its queue, or its delay queues (events whose projection failed and wait to be retried),
  hold messages, and the oldest of them may have waited longer than
  ``BLUME_PROJECTION_MAX_LAG_SECONDS``.

The age of the oldest waiting message is bounded from above without reading it: it arrived
after the last time the queue was seen empty, and (the queue being first in, first out)
after the newest event already applied was produced. The backlog's age is at most ``now``
minus the later of those two instants; past the threshold, access is refused with "try again
shortly" until the consumer catches up. The queue is probed at most every
``PROBE_INTERVAL_SECONDS`` (a passive declare on RabbitMQ), well inside the one-second
budget for a revocation to take effect.

Where this can be wrong, and why it still fails closed:

- **Retries.** An event whose projection failed waits in a delay queue for its retry; it is
  counted as waiting (``Transport.retry_depth``), so a revocation that failed to apply keeps
  the gateway refusing once past the threshold, until its retry applies it.
- **Dead letters are not counted.** An event dead-lettered (malformed, or out of retries) is
  no longer waiting: the projection misses it until ops replay it (``blume-share dlq``). A
  DLQ message on ``blume.share.access_gateway.dlq`` raises the DLQ alert; counting it here
  would let one poison message close the gateway for everyone.
- **Several replicas.** The projection tables are one set in the gateway's schema, and the
  queue is one, consumed by every replica: its depth is the same answer for all. The newest
  applied event is each replica's own: a replica that applied fewer events has an older
  one, so it refuses sooner, never later. A replica whose own consumer is detached refuses
  even while the others consume.
- **Clock skew.** The newest applied event is stamped by its producer's clock. A producer
  clock ahead of ours would make the backlog look younger than it is, so a stamp is held to
  our own clock when applied: the bound is then too generous by at most that event's own
  time in the queue (itself under the threshold, or the gateway was refusing). A producer
  clock behind ours only makes the gateway refuse sooner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, Protocol

from blume_runtime.topology import QueueSpec
from blume_runtime.transport import Transport

PROBE_INTERVAL_SECONDS: Final = 0.2


@dataclass(frozen=True, slots=True)
class QueueProbe:
    """What the transport says of the gateway's queue right now."""

    attached: bool
    """This process has a live consumer on the queue."""
    pending: int | None
    """Messages waiting in the queue or its delay queues (None: the broker could not say)."""


Probe = Callable[[], Awaitable[QueueProbe]]


class Staleness(StrEnum):
    DETACHED = "detached"
    BEHIND = "behind"


class FreshnessCheck(Protocol):
    """What the grant check asks (``Freshness``, or a stand-in where events are applied
    synchronously)."""

    async def stale(self) -> Staleness | None: ...

    def applied(self, produced_at: datetime) -> None: ...

    @property
    def applied_count(self) -> int:
        """Events applied by this process so far: a grant checked before the count moved
        may have been changed since (the viewer's brief grant cache drops it)."""
        ...


class Freshness:
    """The gateway's view of its own consumer: current, or stale and why."""

    def __init__(
        self,
        max_lag_seconds: float,
        probe: Probe | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_lag_seconds = max_lag_seconds
        self._probe = probe
        self._clock = clock
        self._newest_applied: float | None = None
        self._last_empty: float | None = None
        self._probed: tuple[float, QueueProbe] | None = None
        self._lock = asyncio.Lock()
        self._applied_count = 0

    def attach(self, probe: Probe) -> None:
        """Set how the queue is probed (the transport exists only once the runtime does)."""
        self._probe = probe
        self._probed = None

    def applied(self, produced_at: datetime) -> None:
        """A projection applied an event produced at ``produced_at`` (by its producer's
        clock: one ahead of ours is held to ours, see the module's "Clock skew")."""
        self._applied_count += 1
        stamp = min(produced_at.timestamp(), self._clock())
        if self._newest_applied is None or stamp > self._newest_applied:
            self._newest_applied = stamp

    @property
    def applied_count(self) -> int:
        return self._applied_count

    async def _current_probe(self, now: float) -> QueueProbe:
        async with self._lock:
            if self._probed is not None and now - self._probed[0] < PROBE_INTERVAL_SECONDS:
                return self._probed[1]
            if self._probe is None:
                probe = QueueProbe(attached=False, pending=None)
            else:
                try:
                    probe = await self._probe()
                except Exception:  # noqa: BLE001 - cannot show it is current: stale
                    probe = QueueProbe(attached=False, pending=None)
            self._probed = (now, probe)
            if probe.attached and probe.pending == 0:
                self._last_empty = now
            return probe

    async def stale(self) -> Staleness | None:
        """None while the projections may be trusted; why not otherwise."""
        now = self._clock()
        probe = await self._current_probe(now)
        if not probe.attached or probe.pending is None:
            return Staleness.DETACHED
        if probe.pending == 0:
            return None
        known = [stamp for stamp in (self._last_empty, self._newest_applied) if stamp is not None]
        if not known or now - max(known) > self.max_lag_seconds:
            return Staleness.BEHIND
        return None


def queue_probe(transport: Transport, service: str) -> Probe:
    """Probe the service's own queue through the runtime's transport."""
    queue = QueueSpec(service, ()).name

    async def probe() -> QueueProbe:
        attached = transport.consumer_states().get(queue, False)
        ready, retrying = await asyncio.gather(
            transport.queue_depth(queue), transport.retry_depth(queue)
        )
        pending = None if ready is None or retrying is None else ready + retrying
        return QueueProbe(attached=attached, pending=pending)

    return probe
