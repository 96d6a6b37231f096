"""What a share costs, counted: CPU of the workers, RabbitMQ and PostgreSQL read from
``/proc``, and the runtime's own counters of deliveries, transactions and SQL statements.

A ``Snapshot`` is taken before and after a timed window; ``Costs`` is their difference.

- *Workers*: ``utime + stime`` of each worker process (``/proc/<pid>/stat``). In the
  one-process mode that process is the bench itself, publisher and SMTP server included.
- *RabbitMQ*: the broker node's ``beam.smp`` (its OS pid asked of the node through
  ``rabbitmqctl eval``). The node is shared with whatever else runs on this machine.
- *PostgreSQL*: the backends serving the bench database (``pg_stat_activity``), which the
  workers' pools keep open for the whole window; and, as a ceiling, the whole server: the
  postmaster with the CPU of its reaped children plus every live child.
- *Counts*: ``blume_messages_handled_total`` (deliveries settled), ``blume_db_transactions_total``
  (commits), ``blume_db_statements_total`` (cursor executes) and ``blume_db_checkouts_total``
  (pool checkouts, each a ``SELECT 1`` ping while pre-ping is on), scraped from each worker's
  ``/metrics`` (or this process's registry); ``xact_commit`` of ``pg_stat_database`` for the
  bench database as a cross-check of the commits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import prometheus_client
import psycopg
from prometheus_client.parser import text_string_to_metric_families

IDLE_SECONDS: Final = 3.0
"""How long the idle cost (outbox sweeps, watchdogs) is measured before the timed batch."""
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
COUNTED: Final = {
    "blume_messages_handled": "deliveries",
    "blume_db_transactions": "transactions",
    "blume_db_statements": "statements",
    "blume_db_checkouts": "checkouts",
    "blume_audit_records_sealed": "sealed",
}


# ------------------------------------------------------------------------------- /proc


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """utime + stime of ``pid`` (plus cutime + cstime with ``reaped_children``); 0 if gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the name: state is index 0, utime 11, stime 12, cutime 13, cstime 14.
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def parent_pid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def children(parent: int) -> list[int]:
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and parent_pid(int(entry)) == parent:
            found.append(int(entry))
    return found


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` (``VmRSS``), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


def rabbitmq_pid() -> int | None:
    """The OS pid of the broker node's ``beam.smp``, or None if the node will not say."""
    executable = shutil.which("rabbitmqctl")
    if executable is None:
        return None
    try:
        done = subprocess.run(
            [executable, "eval", "list_to_integer(os:getpid())."],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    text = done.stdout.strip()
    return int(text) if done.returncode == 0 and text.isdigit() else None


# ----------------------------------------------------------------------------- counters


def parse_counts(exposition: str) -> dict[str, float]:
    """The counters of ``COUNTED`` summed over their labels, from a Prometheus exposition."""
    totals = dict.fromkeys(COUNTED.values(), 0.0)
    for family in text_string_to_metric_families(exposition):
        name = COUNTED.get(family.name)
        if name is None:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                totals[name] += sample.value
    return totals


def local_counts() -> dict[str, float]:
    """This process's counters (the one-process mode)."""
    return parse_counts(prometheus_client.generate_latest().decode())


def scraped_counts(ports: Iterable[int]) -> dict[str, float]:
    """The counters of every worker process, summed, read from their ops ports."""
    totals = dict.fromkeys(COUNTED.values(), 0.0)
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            for name, value in parse_counts(answer.read().decode()).items():
                totals[name] += value
    return totals


# ------------------------------------------------------------------------------ snapshot


@dataclass(frozen=True)
class Snapshot:
    workers: Mapping[int, float]
    rabbitmq: float
    postgres_backends: Mapping[int, float]
    postgres_server: float
    counts: Mapping[str, float]
    xact_commit: int


class Meter:
    """Takes snapshots of one product run: its worker pids, its database, its counters."""

    def __init__(
        self, worker_pids: Sequence[int], database_url: str, ports: Sequence[int] = ()
    ) -> None:
        self.worker_pids = list(worker_pids)
        self.ports = list(ports)
        self._database_url = database_url
        self._rabbitmq = rabbitmq_pid()
        self._postmaster: int | None = None

    def counts(self) -> dict[str, float]:
        return scraped_counts(self.ports) if self.ports else local_counts()

    def _postgres(self) -> tuple[dict[int, float], int]:
        with psycopg.connect(self._database_url, autocommit=True) as connection:
            own = connection.execute("SELECT pg_backend_pid()").fetchone()
            rows = connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            ).fetchall()
            connection.execute("SELECT pg_stat_clear_snapshot()")
            xact = connection.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
        if self._postmaster is None and own is not None:
            self._postmaster = parent_pid(int(own[0]))
        backends = {int(pid): cpu_seconds(int(pid)) for (pid,) in rows}
        return backends, int(xact[0]) if xact else 0

    def _postgres_server(self) -> float:
        if self._postmaster is None:
            return 0.0
        live = sum(cpu_seconds(pid) for pid in children(self._postmaster))
        return cpu_seconds(self._postmaster, reaped_children=True) + live

    def snapshot(self) -> Snapshot:
        backends, xact = self._postgres()
        return Snapshot(
            workers={pid: cpu_seconds(pid) for pid in self.worker_pids},
            rabbitmq=cpu_seconds(self._rabbitmq) if self._rabbitmq else 0.0,
            postgres_backends=backends,
            postgres_server=self._postgres_server(),
            counts=self.counts(),
            xact_commit=xact,
        )

    def rss(self) -> dict[int, int]:
        return {pid: rss_bytes(pid) for pid in self.worker_pids}


@dataclass(frozen=True)
class Costs:
    """Per-share costs over a window of ``shares`` shares."""

    shares: int
    worker_cpu: float
    worker_cpu_each: tuple[float, ...]
    """Per worker process, in the order of ``Meter.worker_pids``."""
    rabbitmq_cpu: float | None
    postgres_backends_cpu: float
    postgres_server_cpu: float
    counts: Mapping[str, float]
    xact_commit: int

    @classmethod
    def between(cls, before: Snapshot, after: Snapshot, shares: int) -> Costs:
        each = tuple(after.workers[pid] - before.workers.get(pid, 0.0) for pid in after.workers)
        backends = sum(
            cpu - before.postgres_backends.get(pid, 0.0)
            for pid, cpu in after.postgres_backends.items()
        )
        return cls(
            shares=shares,
            worker_cpu=sum(each),
            worker_cpu_each=each,
            rabbitmq_cpu=(after.rabbitmq - before.rabbitmq) if after.rabbitmq else None,
            postgres_backends_cpu=backends,
            postgres_server_cpu=after.postgres_server - before.postgres_server,
            counts={name: after.counts[name] - before.counts[name] for name in after.counts},
            xact_commit=after.xact_commit - before.xact_commit,
        )

    def per_share(self, value: float) -> float:
        return value / self.shares if self.shares else 0.0
