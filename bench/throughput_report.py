"""The report ``throughput`` prints: the figures of both sides and the machine they ran on."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

import psycopg

from bench.costs import IDLE_SECONDS
from bench.measuring import ProductRun
from bench.raw_baseline import HOPS, RawRun

# ------------------------------------------------------------------------------ report


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def postgres_version(url: str) -> str:
    try:
        with psycopg.connect(url) as connection:
            row = connection.execute("SHOW server_version").fetchone()
    except psycopg.Error as error:
        return f"unknown ({type(error).__name__})"
    return str(row[0]) if row else "unknown"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def _costs_lines(product: ProductRun, raw_throughput: float) -> list[str]:
    costs, soak = product.costs, product.soak
    if costs is None:
        return []
    per = costs.per_share
    counts = costs.counts
    rabbit = "unknown" if costs.rabbitmq_cpu is None else f"{per(costs.rabbitmq_cpu) * 1000:.1f}"
    lines = [
        f"  cost per share (measured batch of {costs.shares}, until the audit chain is quiet)",
        f"    CPU ms, workers               {per(costs.worker_cpu) * 1000:.1f}"
        + ("" if product.separate_processes else "  (the bench process: publisher, SMTP too)"),
        *(
            [
                "      by worker: "
                + ", ".join(
                    f"{name} {per(cpu) * 1000:.1f}"
                    for name, cpu in zip(product.services, costs.worker_cpu_each, strict=True)
                )
            ]
            if product.separate_processes
            else []
        ),
        f"    CPU ms, RabbitMQ (beam.smp)   {rabbit}  (whole node)",
        f"    CPU ms, PostgreSQL            {per(costs.postgres_backends_cpu) * 1000:.1f}"
        f" (bench database's backends); {per(costs.postgres_server_cpu) * 1000:.1f}"
        " (whole server)",
        f"    deliveries                    {per(counts['deliveries']):.2f}",
        f"    transactions                  {per(counts['transactions']):.2f}"
        f"  (server xact_commit, autocommit pings included: {per(costs.xact_commit):.2f})",
        f"    SQL statements                {per(counts['statements']):.2f}"
        f"  (+ {per(counts['checkouts']):.2f} pool checkouts; the pool no longer pings them)",
        f"    audit records sealed          {per(counts['sealed']):.2f}",
    ]
    idle = product.idle
    if idle is not None:
        each = (
            ", ".join(
                f"{name} {cpu * 1000:.0f}"
                for name, cpu in zip(product.services, idle.worker_cpu_each, strict=True)
            )
            if product.separate_processes
            else ""
        )
        lines += [
            f"    idle, CPU ms over {IDLE_SECONDS:g} s       workers {idle.worker_cpu * 1000:.0f}, "
            f"PostgreSQL {idle.postgres_backends_cpu * 1000:.0f}  (in the figures above too)",
            *([f"      by worker: {each}"] if each else []),
        ]
    if soak is not None:
        lines += [
            "",
            f"  sustained rate                  {product.sustained or 0:.1f} shares/s"
            "  (the batch's whole work: emails, audit records, sealing)",
            f"  open-loop at half the sustained rate: {soak.rate:.1f} shares/s for "
            f"{soak.seconds:.0f} s ({len(soak.latencies)} shares)",
            f"    latency p50 / p99 / max       {_ms(soak.percentile(50))} / "
            f"{_ms(soak.percentile(99))} / {_ms(max(soak.latencies))}"
            "  (scheduled send -> SMTP accepted)",
            "    memory (RSS) over the soak",
        ]
        for name, start in soak.rss_start.items():
            lines.append(
                f"      {name:<28}{start / 2**20:7.1f} MB -> {soak.rss_end[name] / 2**20:7.1f} MB"
                f"  ({soak.growth(name):+.1%})"
            )
    return ["", *lines]


def render_report(
    product: ProductRun,
    raw: RawRun,
    *,
    body_size: int,
    warmup: int,
    postgres: str,
) -> str:
    p, r = product.figures, raw.figures
    rabbit = raw.server
    topology = "1 per process" if product.separate_processes else "one process"
    width = 32

    def row(name: str, left: str, right: str) -> str:
        return f"  {name:<{width}}{left:>20}  {right:>22}"

    lines = [
        "Blume Share throughput: product end to end vs raw aio-pika (same broker, same run)",
        "",
        f"  N measured                      {p.count} shares / {r.count} messages "
        f"(after {warmup} untimed warm-up each)",
        f"  message body                    {body_size} bytes (study.send.requested envelope)",
        f"  critical path                   {HOPS} consumer hops, persistent, confirms, "
        "quorum queues",
        f"  prefetch per consumer           {product.prefetch}",
        f"  {'product workers (' + topology + ')':<32}{', '.join(product.services)}",
        "",
        row("", "product", "raw aio-pika"),
        row(
            "throughput",
            f"{p.throughput:,.1f} shares/s",
            f"{r.throughput:,.1f} messages/s",
        ),
        row("latency p50", _ms(p.percentile(50)), _ms(r.percentile(50))),
        row("latency p99", _ms(p.percentile(99)), _ms(r.percentile(99))),
        row("latency max", _ms(max(p.latencies)), _ms(max(r.latencies))),
        row("first publish -> last done", f"{p.elapsed:,.2f} s", f"{r.elapsed:,.2f} s"),
        row(
            "publishing alone (confirmed)",
            f"{p.publish_seconds:,.2f} s",
            f"{r.publish_seconds:,.2f} s",
        ),
        row(
            "process CPU / wall",
            "(workers elsewhere)" if product.separate_processes else f"{p.cpu_share:.0%} of a core",
            f"{r.cpu_share:.0%} of a core",
        ),
        "",
        f"  ratio product / raw (throughput)   {p.throughput / r.throughput:.3f}"
        f"  (raw is {r.throughput / p.throughput:,.1f}x faster)",
        f"  ratio product / raw (latency p50)  {p.percentile(50) / r.percentile(50):,.1f}x",
        f"  ratio product / raw (latency p99)  {p.percentile(99) / r.percentile(99):,.1f}x",
        "",
        *_costs_lines(product, r.throughput),
        "",
        f"  emails accepted                 {product.accepted} "
        f"(expected {product.expected} incl. warm-up and soak), "
        f"{product.distinct} distinct Message-IDs, "
        f"{len(product.duplicated)} duplicated, {len(product.unexpected)} unexpected"
        + ("" if product.exact else "  <-- NOT EXACTLY ONCE"),
        f"  SMTP client connections         {product.smtp_connections} "
        f"for {product.accepted} emails",
        f"  raw duplicates delivered        {raw.duplicates}",
        "",
        "  environment",
        f"    RabbitMQ                      {_text(rabbit.get('version', '?'))}"
        f" ({_text(rabbit.get('platform', '?'))})",
        f"    PostgreSQL                    {postgres}",
        f"    Python                        {platform.python_version()} "
        f"({platform.python_implementation()}), {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.machine()}",
        f"    aio-pika / aiormq             {_version('aio-pika')} / {_version('aiormq')}",
        "",
        "  throughput = N / (last completion - first publish); latency = completion - publish",
        "  of the same message; product completion = SMTP server accepted the share's email.",
    ]
    return "\n".join(lines)
