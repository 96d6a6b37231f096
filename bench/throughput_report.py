"""The report ``throughput`` prints: the figures of both sides and the machine they ran on."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

import psycopg

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
        f"  emails accepted                 {product.accepted} "
        f"(expected {product.expected} incl. warm-up), "
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
