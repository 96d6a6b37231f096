"""Audit ingest rows per second, against a raw COPY of the same rows measured in the same run.

What is compared
----------------
Events reach the audit store in two steps (see ``blume_audit_sink.sealer``): the worker
*stages* each event in its per-message transaction (``prepare``: secrets fingerprinted,
the event classified, agents and keys extracted, canonical JSON; one INSERT), and the
sealer *appends* staged events to their chains in batches. The batched step is the one
measured against COPY:

*Sealer* (the headline): ``seal_batch`` exactly as the running sink calls it, over events
already staged: take a batch of staged rows (SELECT ... FOR UPDATE SKIP LOCKED), lock the
tenants' heads, drop already recorded events, inherit each share's patient and study from
its earlier records, hash-chain every row, COPY the batch into ``audit_records`` (with the
migrated indexes and triggers), move the heads, delete the staged rows; one transaction
per batch.

*Whole path* (shown too): the same from events in memory, ``prepare`` included, without
the staging table, so what the per-event preparation costs is visible.

*Raw baseline*: the very rows the product wrote, already built in memory, COPYed (binary,
as the sealer does) into ``bench_raw_records``, a table created ``LIKE audit_records
INCLUDING ALL`` (same columns, types, constraints and indexes), in batches of the same size,
one transaction per batch.

The workload is a realistic mix: the six events of each share's life (the request with its
PHI, acceptance, a link with a secret to fingerprint, the email, completion, an access with
client IP and user agent), spread over four tenants.

Why it is fair
--------------
One database, one machine, one process, the same row bytes, the same batch size and commit
pattern; both tables grow alike over the rounds (rounds alternate; each side gets an
untimed warm-up) and the median round is reported. The ratio prices what the sink does
beyond writing rows. Not included: the broker and the worker's per-message transaction,
which staging rides on (one per delivery whatever the audit store does).

Run: ``uv run python -m bench.audit_ingest [--events N] [--batch B] [--rounds R]``; uses
``BLUME_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``) to
create a throw-away database, removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import psycopg
from blume_audit_sink.append import COPY_TYPES, append_entries
from blume_audit_sink.hashing import RECORD_COLUMNS
from blume_audit_sink.sealer import seal_all
from blume_contracts.artefacts import EXAMPLES_DIR
from blume_contracts.audit_entry import prepare
from blume_contracts.envelope import RawEvent
from blume_contracts.ids import share_id_for
from blume_runtime.db import Database
from blume_share.schema import upgrade
from psycopg import sql

DEFAULT_POSTGRES: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
TENANTS: Final = ("demo-hospital", "north-clinic", "lakeshore-imaging", "river-valley")
START: Final = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)

# The bundled example request, the same one the contract tests validate.
REQUEST: Final[dict[str, Any]] = json.loads(
    (EXAMPLES_DIR / "study.send.requested.json").read_text(encoding="utf-8")
)["data"]


def share_events(number: int, tenant: str) -> list[RawEvent]:
    """The six events of one share's life, as the sink sees them.

    The later events carry the share id the dispatcher derives from the request, as in the
    product: the sealer finds a share's patient and people in its request when both are in
    one batch, and looks them up in the store otherwise.
    """
    request = copy.deepcopy(REQUEST)
    request["study"]["patient"]["mrn"] = f"MRN-{number % 5000:05d}"
    at = START + timedelta(seconds=number)
    correlation = str(uuid.uuid4())

    def event(event_type: str, data: Any, step: int) -> RawEvent:
        return RawEvent(
            id=str(uuid.uuid4()),
            source="/bench/audit",
            type=event_type,
            time=at + timedelta(milliseconds=step),
            tenantid=tenant,
            correlationid=correlation,
            data=data,
        )

    requested = event("study.send.requested", request, 0)
    share_id = share_id_for(requested)
    link = {
        "share_id": share_id,
        "link_id": f"lnk_{number:032x}",
        "token_fingerprint": "sha256:" + "c" * 32,
        "sealed_link": f"gAAAAABn-sealed-{number:040d}",
        "expires_at": "2026-11-23T09:00:00+00:00",
        "recipient": REQUEST["recipient"],
        "sender": REQUEST["sender"],
        "organisation": "Demo Hospital",
        "message": None,
        "locale": "en-CA",
    }
    datas: list[tuple[str, Any]] = [
        ("share.accepted", {"share_id": share_id, "method": "external_link"}),
        ("share.link.issued", link),
        (
            "share.notification.sent",
            {
                "share_id": share_id,
                "channel": "email",
                "message_id": f"<{share_id}.link@blume-share.example>",
                "recipient_email": "bob.jones@clinic.example",
                "accepted_at": at.isoformat(),
            },
        ),
        (
            "share.completed",
            {"share_id": share_id, "method": "external_link", "completed_at": at.isoformat()},
        ),
        (
            "share.link.accessed",
            {"share_id": share_id, "client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0"},
        ),
    ]
    return [requested] + [
        event(event_type, data, step) for step, (event_type, data) in enumerate(datas, start=1)
    ]


def workload(events: int, first_share: int) -> list[RawEvent]:
    shares = events // 6
    out: list[RawEvent] = []
    for offset in range(shares):
        number = first_share + offset
        out += share_events(number, TENANTS[number % len(TENANTS)])
    return out


def batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


async def whole_path_round(db: Database, events: list[RawEvent], batch: int) -> float:
    """Seconds to ingest ``events`` from memory: ``prepare`` and ``append_entries``."""
    started = time.perf_counter()
    for chunk in batches(events, batch):
        async with db.transaction() as session:
            await append_entries(session, [prepare(event) for event in chunk])
    return time.perf_counter() - started


async def stage_all(url: str, events: list[RawEvent]) -> None:
    """Stage events as the worker would (``prepare``, a row in audit_pending); not timed."""
    async with await psycopg.AsyncConnection.connect(url) as connection:
        async with connection.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO audit_pending (event_source, event_id, received_at, entry) "
                "VALUES (%s, %s, %s, %s)",
                [
                    (entry.event_source, entry.event_id, entry.recorded_at, entry.to_json())
                    for entry in map(prepare, events)
                ],
            )
        await connection.commit()


async def sealer_round(db: Database, batch: int) -> float:
    """Seconds for the sealer to chain everything staged, batch by batch."""
    started = time.perf_counter()
    await seal_all(db, batch)
    return time.perf_counter() - started


async def raw_round(url: str, rows: list[tuple[Any, ...]], batch: int) -> float:
    """Seconds to COPY ``rows`` into the equivalent table, one transaction per batch.

    Binary COPY, as the sealer writes: the cheaper format for the driver, so the baseline
    is the fastest plain way to store these rows, not a slower one than the product's.
    """
    columns = sql.SQL(", ").join(map(sql.Identifier, RECORD_COLUMNS))
    statement = sql.SQL("COPY bench_raw_records ({}) FROM STDIN (FORMAT BINARY)").format(columns)
    async with await psycopg.AsyncConnection.connect(url) as connection:
        started = time.perf_counter()
        for chunk in batches(rows, batch):
            async with (
                connection.transaction(),
                connection.cursor() as cursor,
                cursor.copy(statement) as copy_in,
            ):
                copy_in.set_types(COPY_TYPES)
                for row in chunk:
                    await copy_in.write_row(row)
        return time.perf_counter() - started


async def written_rows(url: str, event_ids: set[str]) -> list[tuple[Any, ...]]:
    """The rows the product wrote for these events, as COPY tuples, in write order."""
    columns = sql.SQL(", ").join(map(sql.Identifier, RECORD_COLUMNS))
    async with await psycopg.AsyncConnection.connect(url) as connection:
        cursor = await connection.execute(
            sql.SQL("SELECT {} FROM audit_records ORDER BY recorded_at, chain_id, seq").format(
                columns
            )
        )
        found = await cursor.fetchall()
    # Chains continue across rounds and event ids are fresh, so the rows never collide.
    event_id = RECORD_COLUMNS.index("event_id")
    return [tuple(row) for row in found if row[event_id] in event_ids]


def rate(rows: int, seconds: float) -> float:
    return rows / seconds


async def run(admin_url: str, events: int, batch: int, rounds: int) -> None:
    name = f"blume_bench_audit_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    db = Database(url)
    try:
        upgrade(url)
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("CREATE TABLE bench_raw_records (LIKE audit_records INCLUDING ALL)")
        # Warm-up, untimed: caches, plans, the first chain heads.
        warm = workload(min(events, 6 * 200), first_share=10_000_000)
        await stage_all(url, warm)
        await sealer_round(db, batch)
        await raw_round(url, await written_rows(url, {e.id for e in warm}), batch)

        sealer: list[float] = []
        whole: list[float] = []
        raw: list[float] = []
        for number in range(rounds):
            staged = workload(events, first_share=2 * number * events)
            await stage_all(url, staged)
            seconds = await sealer_round(db, batch)
            rows = await written_rows(url, {e.id for e in staged})
            sealer.append(rate(len(rows), seconds))
            raw.append(rate(len(rows), await raw_round(url, rows, batch)))
            in_memory = workload(events, first_share=(2 * number + 1) * events)
            seconds = await whole_path_round(db, in_memory, batch)
            whole.append(rate(len(in_memory), seconds))
            print(
                f"round {number + 1}: sealer {sealer[-1]:,.0f} rows/s, "
                f"whole path {whole[-1]:,.0f} rows/s, raw COPY {raw[-1]:,.0f} rows/s",
                flush=True,
            )
        baseline = statistics.median(raw)
        print()
        print(
            f"audit ingest on PostgreSQL: {len(rows):,} events a round, {rounds} rounds, "
            f"batches of {batch} (medians)"
        )
        label = "raw COPY of the same rows, equivalent table"
        print(f"  {label:<48} {baseline:>9,.0f} rows/s")
        for label, rates in (
            ("sealer, staged -> chained (the batched append)", sealer),
            ("whole path, prepare + append from memory", whole),
        ):
            median = statistics.median(rates)
            print(f"  {label:<48} {median:>9,.0f} rows/s   ratio {median / baseline:.2f}")
        print("  (aim: the batched append at least 0.50 of raw)")
    finally:
        await db.dispose()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000, help="events per round")
    parser.add_argument("--batch", type=int, default=2000, help="events per transaction")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    admin_url = os.environ.get("BLUME_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    asyncio.run(run(admin_url, args.events, args.batch, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
