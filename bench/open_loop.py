"""Latency at a steady rate, open-loop, and the workers' memory over that soak.

Requests are sent on a fixed schedule (request ``i`` at ``start + i / rate``), each publish
in a task of its own, never waiting for a completion: a slow product cannot slow the
arrivals down and so hide its own queueing (coordinated omission). A request's latency runs
from its scheduled time to the SMTP server accepting its email.

The resident memory (``VmRSS``) of every worker process is read when the soak starts and
again once its last email arrived; the growth is the difference over the start.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bench.harness import BenchError
from bench.measuring import POLL_SECONDS, Send

PROGRESS_SECONDS = 10.0


@dataclass(frozen=True)
class OpenLoop:
    rate: float
    """Requests per second sent."""
    seconds: float
    latencies: list[float]
    rss_start: Mapping[str, int]
    rss_end: Mapping[str, int]

    def percentile(self, p: int) -> float:
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1]

    def growth(self, worker: str) -> float:
        start = self.rss_start[worker]
        return (self.rss_end[worker] - start) / start if start else 0.0


async def open_loop(
    items: Sequence[tuple[str, Send]],
    arrivals: Callable[[], Mapping[str, float]],
    *,
    rate: float,
    rss: Callable[[], Mapping[str, int]],
    batch_limit: float,
) -> OpenLoop:
    """Send ``items`` at ``rate`` per second on a fixed schedule; wait for every arrival."""
    keys = [key for key, _send in items]
    scheduled: dict[str, float] = {}
    sends: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []

    def finished(task: asyncio.Task[None]) -> None:
        sends.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())  # type: ignore[arg-type]

    rss_start = dict(rss())
    start = time.perf_counter() + 0.05
    next_progress = start + PROGRESS_SECONDS
    for index, (key, send) in enumerate(items):
        due = start + index / rate
        scheduled[key] = due
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send())
        sends.add(task)
        task.add_done_callback(finished)
        if time.perf_counter() >= next_progress:
            seen = arrivals()
            done = sum(1 for key in keys if key in seen)
            print(f"  [open-loop] sent {index + 1}, done {done}/{len(keys)}", file=sys.stderr)
            next_progress += PROGRESS_SECONDS
    while True:
        seen = arrivals()
        if all(key in seen for key in keys):
            break
        if failures:
            raise BenchError(f"open-loop: a publish failed: {failures[0]!r}")
        if time.perf_counter() - start > batch_limit:
            done = sum(1 for key in keys if key in seen)
            raise BenchError(f"open-loop: only {done} of {len(keys)} done after {batch_limit}s")
        await asyncio.sleep(POLL_SECONDS)
    seconds = time.perf_counter() - start
    return OpenLoop(
        rate=rate,
        seconds=seconds,
        latencies=[seen[key] - scheduled[key] for key in keys],
        rss_start=rss_start,
        rss_end=dict(rss()),
    )
