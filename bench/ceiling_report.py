"""The report ``ceiling`` prints: per variant, the rate and the CPU per share of the broker,
the database and the minimal client, and the ceiling the unavoidable CPU sets on 2 cores."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from bench.costs import Costs
from bench.measuring import Figures
from bench.raw_baseline import HOPS

GOAL_RATIO: Final = 0.20
"""Issue 14: a share at least at a fifth of the raw 3-hop chain's rate."""
VERDICT_VARIANTS: Final = ("minimal", "product shape")
"""The chain alone, and the chain with the product's deliveries and audited events."""
CORES: Final = os.cpu_count() or 1
CPU_MS_PER_SECOND: Final = 1000.0 * CORES


@dataclass
class Measured:
    """One variant over every round; ``raw_rates`` is the raw chain's rate in each round."""

    name: str
    description: str
    figures: list[Figures] = field(default_factory=list)
    costs: list[Costs] = field(default_factory=list)
    raw_rates: list[float] = field(default_factory=list)

    def add(self, figures: Figures, costs: Costs, raw_rate: float) -> None:
        self.figures.append(figures)
        self.costs.append(costs)
        self.raw_rates.append(raw_rate)

    def per_share_ms(self, part: Callable[[Costs], float | None]) -> list[float]:
        return [costs.per_share(part(costs) or 0.0) * 1000 for costs in self.costs]

    @property
    def rates(self) -> list[float]:
        return [figures.throughput for figures in self.figures]

    @property
    def rabbitmq(self) -> list[float]:
        return self.per_share_ms(lambda costs: costs.rabbitmq_cpu)

    @property
    def postgres(self) -> list[float]:
        return self.per_share_ms(lambda costs: costs.postgres_backends_cpu)

    @property
    def postgres_server(self) -> list[float]:
        return self.per_share_ms(lambda costs: costs.postgres_server_cpu)

    @property
    def client(self) -> list[float]:
        return self.per_share_ms(lambda costs: costs.worker_cpu)

    @property
    def unavoidable(self) -> list[float]:
        """Broker + the bench database's backends + the minimal client, per round."""
        return [sum(parts) for parts in zip(self.rabbitmq, self.postgres, self.client, strict=True)]

    @property
    def ceilings(self) -> list[float]:
        return [CPU_MS_PER_SECOND / ms if ms > 0 else float("inf") for ms in self.unavoidable]

    @property
    def ceiling_ratios(self) -> list[float]:
        return [ceiling / raw for ceiling, raw in zip(self.ceilings, self.raw_rates, strict=True)]


def spread(values: Sequence[float], digits: int = 1) -> str:
    """Median, and the range when there is more than one value."""
    middle = f"{statistics.median(values):,.{digits}f}"
    if len(values) < 2:
        return middle
    return f"{middle} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def _verdict(minimal: Measured, raw: Measured) -> list[str]:
    raw_rate = statistics.median(raw.rates)
    goal = GOAL_RATIO * raw_rate
    budget = CPU_MS_PER_SECOND / goal
    cost = statistics.median(minimal.unavoidable)
    ceiling = statistics.median(minimal.ceilings)
    ratio = statistics.median(minimal.ceiling_ratios)
    where = (
        f"ABOVE the ceiling: the goal needs {budget:.1f} ms of CPU per share for everything, and "
        f"the broker, the database and a minimal client alone take {cost:.1f} ms"
        if goal > ceiling
        else f"below the ceiling: it leaves {budget - cost:.1f} ms per share beyond the "
        f"{cost:.1f} ms that the broker, the database and a minimal client cannot avoid"
    )
    services = statistics.median(minimal.rabbitmq) + statistics.median(minimal.postgres)
    return [
        f"  ceiling ({minimal.name}): {ceiling:,.0f} shares/s = {ratio:.3f} x the raw chain"
        f" ({CPU_MS_PER_SECOND:,.0f} ms of CPU per second / {cost:.1f} ms per share)",
        f"  the goal, {GOAL_RATIO:.2f} x raw = {goal:,.0f} shares/s, lies",
        f"    {where}.",
        f"    At that rate the workers may spend at most {budget - services:.1f} ms per share:"
        f" the budget less RabbitMQ and PostgreSQL's {services:.1f} ms.",
    ]


def render_report(
    measured: Sequence[Measured], *, messages: int, rounds: int, prefetch: int
) -> str:
    by_name = {variant.name: variant for variant in measured}
    raw = by_name["raw"]
    width = 26

    def row(label: str, values: Callable[[Measured], str]) -> str:
        return f"  {label:<34}" + "".join(f"{values(m):>{width}}" for m in measured)

    lines = [
        "Blume Share ceiling: the minimal design's unavoidable CPU per share (same broker, "
        "same database, same run)",
        "",
        f"  N measured                        {messages} shares per variant and round, "
        f"{rounds} round(s) alternated; median (min-max)",
        f"  chain                             {HOPS} consumer hops, persistent, confirms, "
        f"quorum queues, prefetch {prefetch}",
        "",
        row("", lambda m: m.name),
        row("", lambda m: m.description[: width - 2]),
        row("throughput (shares/s)", lambda m: spread(m.rates)),
        row(
            "  ratio to raw (same round)",
            lambda m: spread(
                [rate / raw_rate for rate, raw_rate in zip(m.rates, m.raw_rates, strict=True)], 3
            ),
        ),
        row("CPU ms/share RabbitMQ", lambda m: spread(m.rabbitmq, 2)),
        row("CPU ms/share PostgreSQL backends", lambda m: spread(m.postgres, 2)),
        row("CPU ms/share PostgreSQL server", lambda m: spread(m.postgres_server, 2)),
        row("CPU ms/share client (this process)", lambda m: spread(m.client, 2)),
        row("unavoidable (RMQ + PG + client)", lambda m: spread(m.unavoidable, 2)),
        row(f"ceiling on {CORES} cores (shares/s)", lambda m: spread(m.ceilings, 0)),
        row("ceiling / raw rate (same round)", lambda m: spread(m.ceiling_ratios, 3)),
        "",
        *(
            line
            for name in VERDICT_VARIANTS
            if name in by_name
            for line in _verdict(by_name[name], raw)
        ),
        "",
        "  what it means",
        "    RabbitMQ is the whole node's beam.smp, shared with whatever else runs here. The",
        "    ceiling counts the bench database's backends; the whole server adds its background",
        "    processes and every other session's reaped backends (a spike means one ended).",
        "    The client is this process: it also publishes the requests and seals the audit",
        "    chain. minimal: three events per share, each audited once. product shape: the",
        "    product's counts, five consumer deliveries with a transaction each and six events",
        "    audited, none of them as a delivered copy (as the product: its producers stage them).",
        "",
        "  environment",
        f"    Python {platform.python_version()}, {CORES} CPUs, {platform.system()} "
        f"{platform.machine()}",
        "  throughput = N / (last completion - first publish); completion = the last hop's",
        "  commit (raw: the last hop's receipt).",
    ]
    return "\n".join(lines)
