"""How both sides of ``throughput`` are timed: the same publisher, the same clock."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Final

from blume_share.requests import PreparedRequest, parse_requests

from bench.harness import (
    BenchError,
)

if TYPE_CHECKING:
    from bench.costs import Costs
    from bench.open_loop import OpenLoop

POLL_SECONDS: Final = 0.02


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Figures:
    """One side's measured batch."""

    count: int
    elapsed: float
    latencies: list[float]
    cpu_seconds: float
    publish_seconds: float
    """How long publishing the batch took (sequential, each publish confirmed)."""

    @property
    def throughput(self) -> float:
        return self.count / self.elapsed if self.elapsed > 0 else float("inf")

    def percentile(self, p: int) -> float:
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1]

    @property
    def cpu_share(self) -> float:
        """Process CPU time over wall time during the batch (1.0 = one core busy)."""
        return self.cpu_seconds / self.elapsed if self.elapsed > 0 else 0.0


Send = Callable[[], Awaitable[None]]


async def _progress(label: str, total: int, seen: Callable[[], int], every: float) -> None:
    started = time.perf_counter()
    while True:
        await asyncio.sleep(every)
        elapsed = time.perf_counter() - started
        print(f"  [{label}] {seen()}/{total} done after {elapsed:.1f}s", file=sys.stderr)


async def drive(
    label: str,
    items: Sequence[tuple[str, Send]],
    arrivals: Callable[[], Mapping[str, float]],
    *,
    warmup: Sequence[tuple[str, Send]] = (),
    batch_limit: float,
    progress_every: float,
    diagnose: Callable[[], str],
) -> Figures:
    """Publish ``items`` in order (timing each), then wait until every key has arrived.
    An untimed ``warmup`` batch goes first, driven alike: both sides start equally warm."""
    if warmup:
        await drive(
            f"{label} warm-up",
            warmup,
            arrivals,
            batch_limit=batch_limit,
            progress_every=progress_every,
            diagnose=diagnose,
        )
    keys = [key for key, _send in items]
    published: dict[str, float] = {}

    def done() -> int:
        seen = arrivals()
        return sum(1 for key in keys if key in seen)

    progress = asyncio.create_task(_progress(label, len(keys), done, progress_every))
    cpu_started = time.process_time()
    try:
        for key, send in items:
            published[key] = time.perf_counter()
            await send()
        first = min(published.values())
        publish_seconds = time.perf_counter() - first
        while done() < len(keys):
            if time.perf_counter() - first > batch_limit:
                raise BenchError(
                    f"{label}: only {done()} of {len(keys)} done after {batch_limit:.0f}s; "
                    f"queues (name, ready, unacked):\n{diagnose()}"
                )
            await asyncio.sleep(POLL_SECONDS)
    finally:
        progress.cancel()
    cpu_seconds = time.process_time() - cpu_started
    seen = arrivals()
    last = max(seen[key] for key in keys)
    return Figures(
        count=len(keys),
        elapsed=last - first,
        latencies=[seen[key] - published[key] for key in keys],
        cpu_seconds=cpu_seconds,
        publish_seconds=publish_seconds,
    )


def fresh_requests(count: int) -> list[PreparedRequest]:
    """Requests built like ``blume-share send`` builds the bundled example: a fresh id each."""
    example = files("blume_share").joinpath("examples/study-send-request.json").read_text()
    requests: list[PreparedRequest] = []
    for _ in range(count):
        requests.extend(parse_requests(example))
    return requests


@dataclass(frozen=True)
class ProductRun:
    figures: Figures
    expected: int
    accepted: int
    distinct: int
    duplicated: dict[str, int]
    unexpected: list[str]
    prefetch: int
    smtp_connections: int
    services: list[str]
    separate_processes: bool = False
    costs: Costs | None = None
    idle: Costs | None = None
    """What the product costs doing nothing, over ``IDLE_SECONDS`` (its ``shares`` is 1)."""
    soak: OpenLoop | None = None
    sustained: float | None = None
    """Shares/s counting every share's whole work, up to its last audit record sealed."""

    @property
    def exact(self) -> bool:
        return (
            self.accepted == self.expected
            and self.distinct == self.expected
            and not self.duplicated
            and not self.unexpected
        )
