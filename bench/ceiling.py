"""The ceiling: what the product's guarantees cost at the least, on this machine.

Issue 14 asks for a share at a fifth of a raw 3-hop chain's rate. This bench prices the
*minimal design* that keeps the guarantees, so the goal can be set against a physical
ceiling rather than against the product as it is.

What runs (one broker, one database, one run; a fresh vhost and database, removed at the end)
-----------------------------------------------------------------------------------------
- *raw*: ``bench.raw_baseline``'s chain as ``bench.throughput`` runs it: three quorum
  queues, persistent messages, publisher confirms, consume -> publish -> ack.
- *minimal*: the same chain where each hop, between receiving and republishing, does the one
  PostgreSQL transaction the guarantees cannot avoid, as one prepared statement (psycopg,
  autocommit, no ORM): the inbox claim (``INSERT ... ON CONFLICT DO NOTHING``) and, only if
  the claim is new, the effect row, the outbox row and an audit staging row carrying the
  broker-verified producer (``user_id``). One COMMIT; then the publish with a confirm; then
  the ack. Published outbox rows are cleared in batches, and a sealer chains staged audit
  rows (SHA-256 over the previous hash) with one COPY per batch, as the audit sink does.
- *audit copies*: the same, but the audit row is not written in the hop's transaction: a
  fourth consumer bound to everything receives a copy of every event and INSERTs it (one
  statement per copy, then the ack), as the product's audit sink did until each producer
  staged its own events' rows.
- *product shape*: *minimal* with the product's counts: five deliveries (the product's are
  the request to the dispatcher and to the audit sink, the link request, the issued link,
  the email's outcome to the dispatcher) and six events audited, the sixth staged in the
  first hop's transaction and never published (only the audit needs it).
- *batched*: *minimal* with up to ``--batch`` deliveries per transaction (the same statement
  over arrays), their publishes confirmed together and one ``ack(multiple=True)``.

Each hop handles the event it received: three events per share (*product shape*: six),
each audited once. A share is done when the last hop has committed. The variants are run
in rounds, alternated, so that whatever else runs on the 2 cores falls on all of them
alike; the report gives the median and the spread.

What is counted (``bench.costs.Meter`` around the timed batch, until the audit is sealed)
--------------------------------------------------------------------------------------
CPU of RabbitMQ's ``beam.smp``, of PostgreSQL (the bench database's backends, and the whole
server) and of this process (the minimal client: JSON decoding, psycopg, aio-pika, the
publisher of the requests and the sealer). The *ceiling* is 2 cores' 2000 ms of CPU per
second over the unavoidable CPU per share (broker + database backends + minimal client),
and its ratio to the raw chain's rate in the same round.

Run: ``uv run python -m bench.ceiling [--messages N | --quick] [--rounds R] [--batch B]``.
It fails (exit 1) only when a share or an audit record is lost or doubled, or something
breaks; never on time.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import aio_pika
import psycopg
from blume_runtime.settings import Settings

from bench.ceiling_chain import Variant, run_variant
from bench.ceiling_report import Measured, render_report
from bench.costs import Costs, Meter
from bench.harness import DEFAULT_AMQP, DEFAULT_POSTGRES, BenchError, Isolation
from bench.measuring import fresh_requests
from bench.raw_baseline import run_raw

DEFAULT_MESSAGES: Final = 1000
QUICK_MESSAGES: Final = 100
DEFAULT_ROUNDS: Final = 2
PREFETCH: Final = int(Settings.model_fields["prefetch"].default)
"""The product's prefetch per consumer: a hop holds at most this many unacked deliveries."""
DEFAULT_BATCH: Final = PREFETCH


def variants(batch: int) -> list[Variant]:
    return [
        Variant("minimal", "audit row in hop's tx", audit_in_transaction=True),
        Variant("audit copies", "4th consumer, all events", audit_in_transaction=False),
        Variant(
            "product shape",
            "5 hops, 6 events audited",
            audit_in_transaction=True,
            hops=5,
            extra_events=1,
        ),
        Variant(
            f"batched x{batch}",
            f"<= {batch} deliveries per tx",
            audit_in_transaction=True,
            batch=batch,
        ),
    ]


@asynccontextmanager
async def metered(meter: Meter, into: list[Costs], count: int) -> AsyncIterator[None]:
    before = await asyncio.to_thread(meter.snapshot)
    yield
    after = await asyncio.to_thread(meter.snapshot)
    into.append(Costs.between(before, after, count))


async def run_rounds(args: argparse.Namespace, isolation: Isolation) -> list[Measured]:
    database_url = isolation.create_database()
    amqp_url = isolation.create_vhost("ceiling")
    raw_url = isolation.create_vhost("ceiling-raw")
    bodies = [
        (request.event.id, request.message().body)
        for request in fresh_requests(args.warmup + args.messages)
    ]
    warmup, timed = bodies[: args.warmup], bodies[args.warmup :]
    meter = Meter([os.getpid()], database_url)
    common: dict[str, Any] = {
        "bodies": timed,
        "warmup_bodies": warmup,
        "prefetch": PREFETCH,
        "batch_limit": args.timeout,
        "progress_every": 2.0 if args.quick else 5.0,
    }
    measured: dict[str, Measured] = {}
    for round_number in range(1, args.rounds + 1):
        print(f"round {round_number}/{args.rounds}: raw chain ...", file=sys.stderr)
        raw_costs: list[Costs] = []
        raw = await run_raw(
            raw_url,
            **common,
            diagnose=lambda: isolation.queue_depths(raw_url),
            window=functools.partial(metered, meter, raw_costs, len(timed)),
        )
        if raw.duplicates:
            raise BenchError(f"raw chain delivered {raw.duplicates} duplicates")
        measured.setdefault("raw", Measured("raw", "aio-pika, no database")).add(
            raw.figures, raw_costs[0], raw.figures.throughput
        )
        for variant in variants(args.batch):
            print(f"round {round_number}/{args.rounds}: {variant.name} ...", file=sys.stderr)
            run = await run_variant(
                variant,
                **common,
                amqp_url=amqp_url,
                database_url=database_url,
                meter=meter,
                diagnose=lambda: isolation.queue_depths(amqp_url),
            )
            measured.setdefault(variant.name, Measured(variant.name, variant.description)).add(
                run.figures, run.costs, raw.figures.throughput
            )
    return list(measured.values())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ceiling",
        description="The minimal design's unavoidable CPU per share, and the ceiling it sets.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--messages",
        type=int,
        default=DEFAULT_MESSAGES,
        help=f"measured shares per variant and round (default {DEFAULT_MESSAGES})",
    )
    size.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_MESSAGES} shares")
    parser.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_ROUNDS,
        help=f"alternated rounds of every variant (default {DEFAULT_ROUNDS})",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BATCH,
        help=f"deliveries per transaction in the batched variant (default {DEFAULT_BATCH})",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds per batch (default 600)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.messages = QUICK_MESSAGES
    if args.messages < 1 or args.rounds < 1 or args.batch < 1:
        parser.error("--messages, --rounds and --batch must be at least 1")
    args.warmup = min(50, max(1, args.messages // 10))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    isolation = Isolation(
        os.environ.get("BLUME_BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        os.environ.get("BLUME_BENCH_AMQP_URL", DEFAULT_AMQP),
    )
    try:
        measured = asyncio.run(run_rounds(args, isolation))
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    except (BenchError, psycopg.Error, aio_pika.exceptions.AMQPError) as error:
        print(f"benchmark failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not leave the database or the vhosts behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            isolation.remove_all()
        finally:
            signal.signal(signal.SIGINT, previous)
    print(render_report(measured, messages=args.messages, rounds=args.rounds, prefetch=PREFETCH))
    return 0


if __name__ == "__main__":
    sys.exit(main())
