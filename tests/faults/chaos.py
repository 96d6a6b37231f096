"""``make chaos``: the whole system on infrastructure of its own, through every fault.

It starts a three-node RabbitMQ cluster, a PostgreSQL cluster and an SMTP server of its own
(never the shared services on 5432/5672), migrates, imports the Blume patients, runs each
worker as its own ``blume-share run <service>`` process, and drives shares at a steady
rate through: SIGKILL of each worker in turn (restarted after 5 s), broker ``stop_app`` /
``start_app``, a full broker restart, a cluster node killed and brought back, PostgreSQL
``restart -m immediate``, an SMTP outage and poison messages of every kind. After each
fault it waits for every worker's consumers to re-attach. Once the system has settled it
prints a table and exits 1 if any invariant failed (lost or stuck shares, two Message-IDs
for one share, unexplained resends, events not audited exactly once, a chain that does not
verify, consumers that never came back, stalled queues), 2 if the suite itself could not
run. Everything it started is removed on exit, also on Ctrl-C; the logs stay in --log-dir.

Run: ``uv run python -m tests.faults.chaos [--smoke] [--shares N] ...`` (``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

from blume_share.services import SERVICES
from cryptography.fernet import Fernet

from tests.faults.accounts import OPS, UPSTREAM_CLIENT, Accounts, set_up_accounts
from tests.faults.broker import RabbitCluster, erlang_cookie, rabbitmq_bin_dir
from tests.faults.corpus import poison_for
from tests.faults.database import PostgresCluster, postgres_bin_dir
from tests.faults.mail import MailServer
from tests.faults.monitor import leftover_messages, progress, settle
from tests.faults.plan import System, Timings, fault_plan, run_plan
from tests.faults.report import Collected, FaultRecord, analyse, render
from tests.faults.stores import Stores, dead_letter_causes
from tests.faults.traffic import Bus, Driver, PlannedShare, plan_shares
from tests.faults.workers import Readiness, Workers, run_cli

EXIT_INVARIANT: Final = 1
EXIT_SUITE: Final = 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults.chaos",
        description="Drive shares through injected faults on infrastructure of the suite's own, "
        "then check that no share was lost, stuck or emailed twice under two ids.",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="short run for CI: 100 shares, "
        "a 20 s SMTP outage, short gaps (explicit options still win)",
    )
    parser.add_argument("--shares", type=int, help="shares in all (default 1000; smoke 100)")
    parser.add_argument("--poison", type=int, help="poison messages (default 30)")
    parser.add_argument("--smtp-outage", type=float, help="seconds (default 120; smoke 20)")
    parser.add_argument(
        "--kill-delay",
        type=float,
        default=5.0,
        help="seconds a SIGKILLed worker stays down (default 5)",
    )
    parser.add_argument(
        "--broker-down", type=float, help="seconds a faulted node stays down (default 10; smoke 5)"
    )
    parser.add_argument("--gap", type=float, help="seconds between faults (default 10; smoke 3)")
    parser.add_argument(
        "--reattach-deadline",
        type=float,
        default=120.0,
        help="seconds each worker has to re-attach after a fault (default 120)",
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        help="seconds to wait for the system to "
        "settle after the last fault (default 600; smoke 180)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        help="where worker, broker and database logs go (default .blume/chaos/<run>)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the data directories too (for a post-mortem)"
    )
    parser.add_argument("--rabbitmq-bin", type=Path, help="directory of rabbitmq-server")
    parser.add_argument("--postgres-bin", type=Path, help="directory of initdb and pg_ctl")
    parser.add_argument(
        "--postgres-os-user",
        default="postgres",
        help="who runs PostgreSQL when the suite runs as root (default postgres)",
    )
    parser.add_argument(
        "--erlang-cookie-file", type=Path, help="cookie to share (default: the shared node's)"
    )
    args = parser.parse_args(argv)
    smoke = args.smoke
    defaults = {
        "shares": 100 if smoke else 1000,
        "poison": 30,
        "smtp_outage": 20.0 if smoke else 120.0,
        "broker_down": 5.0 if smoke else 10.0,
        "gap": 3.0 if smoke else 10.0,
        "settle_timeout": 180.0 if smoke else 600.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.shares < 1:
        parser.error("--shares must be at least 1")
    return args


@dataclass
class Infrastructure:
    """What the suite started, so that exactly that is torn down."""

    workdir: Path
    log_dir: Path
    cluster: RabbitCluster | None = None
    postgres: PostgresCluster | None = None
    mail: MailServer | None = None
    workers: Workers | None = None

    def tear_down(self, keep: bool) -> None:
        steps = [
            self.workers.stop_all if self.workers else None,
            self.cluster.stop if self.cluster else None,
            self.postgres.stop if self.postgres else None,
            self.mail.refuse if self.mail else None,
        ]
        for step in steps:
            if step is not None:
                try:
                    step()
                except Exception as error:  # noqa: BLE001 - keep tearing the rest down
                    print(f"cleanup step failed: {type(error).__name__}: {error}")
        for node in self.cluster.nodes if self.cluster else []:
            if (node.home / "log").is_dir():
                shutil.copytree(node.home / "log", self.log_dir / node.name, dirs_exist_ok=True)
        if self.postgres and self.postgres.log_file.exists():
            shutil.copy(self.postgres.log_file, self.log_dir / "postgres.log")
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C; while tearing down, both are ignored."""

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def worker_environment(infra: Infrastructure, amqp_url: str, state: Path) -> dict[str, str]:
    assert infra.postgres is not None
    assert infra.mail is not None
    env = {key: value for key, value in os.environ.items() if not key.startswith("BLUME_")}
    env.update(
        BLUME_AMQP_URL=amqp_url,
        BLUME_DATABASE_URL=infra.postgres.url,
        BLUME_SMTP_URL=infra.mail.url,
        BLUME_PUBLIC_BASE_URL="https://share.blume-chaos.example",
        BLUME_TOKEN_SEALING_KEY=Fernet.generate_key().decode(),
        BLUME_GATEWAY_SECRET_KEY=secrets.token_urlsafe(48),
        BLUME_LOG_FORMAT="json",
        BLUME_STATE_DIR=str(state),
    )
    return env


async def drive(args: argparse.Namespace, infra: Infrastructure, run_tag: str) -> int:
    assert infra.cluster is not None
    assert infra.postgres is not None
    assert infra.mail is not None
    cluster = infra.cluster
    services = list(SERVICES)
    env = worker_environment(infra, cluster.amqp_url(cluster.nodes[0]), infra.workdir / "state")
    accounts = set_up_accounts(cluster, env, infra.workdir)
    if accounts.broker_users is not None:
        env["BLUME_BROKER_USERS"] = accounts.broker_users
    print(
        f"broker users: {', '.join(accounts.passwords)} in vhost {cluster.vhost}"
        if accounts.per_service
        else "broker users: one for every service (this runtime has no broker definitions)"
    )
    cli_env = {**env, "BLUME_AMQP_URL": accounts.url(cluster.nodes[1], OPS)}
    run_cli(cli_env, "migrate")
    shares, patients = plan_shares(args.shares, run_tag)
    patients_file = infra.workdir / "patients.jsonl"
    patients_file.write_text("".join(json.dumps(patient) + "\n" for patient in patients))
    print(run_cli(cli_env, "patients", "import", str(patients_file)).strip())

    def worker_env(service: str) -> dict[str, str]:
        own = accounts.url(cluster.nodes[0], accounts.service_user(service))
        return {**env, "BLUME_AMQP_URL": own}

    infra.workers = Workers(services, worker_env, infra.log_dir)
    infra.workers.start_all()
    bus = Bus(accounts.url(cluster.nodes[1], UPSTREAM_CLIENT), cluster.amqp_url(cluster.nodes[1]))
    try:
        await bus.connect(wait_for_exchange=120)
        return await exercise(args, infra, run_tag, accounts, bus, shares, cli_env)
    finally:
        await bus.close()


async def exercise(
    args: argparse.Namespace,
    infra: Infrastructure,
    run_tag: str,
    accounts: Accounts,
    bus: Bus,
    shares: list[PlannedShare],
    cli_env: dict[str, str],
) -> int:
    """Once the workers run: wait for them, drive the faults, settle, judge."""
    cluster, workers = accounts.cluster, infra.workers
    assert workers is not None
    assert infra.postgres is not None
    assert infra.mail is not None
    services = list(workers.processes)
    readiness = Readiness(workers, lambda: cluster.live_consumers(cluster.nodes[1]))
    ready = await readiness.wait_all(args.reattach_deadline)
    if any(took is None for took in ready.values()):
        print(f"workers did not start: {ready}; see {infra.log_dir}")
        return EXIT_SUITE
    print(f"workers ready ({readiness.mode}); quorum members per queue:")
    for name, members in cluster.queue_table(cluster.nodes[1], "members"):
        print(f"  {name:<32} {members}")

    poison, send_poison, source = await poison_for(args.poison, run_tag, accounts, bus)
    print(f"poison: {len(poison)} messages from {source}")
    timings = Timings(
        args.kill_delay, args.broker_down, args.smtp_outage, args.gap, args.reattach_deadline
    )
    system = System(
        cluster,
        infra.postgres,
        infra.mail,
        workers,
        readiness,
        bus,
        Driver(bus, shares, rate=1.0),
        poison,
        send_poison,
        timings,
    )
    stores = Stores(infra.postgres.url)
    plan = fault_plan(services, timings)
    publishing = asyncio.create_task(system.driver.run())
    reporter = asyncio.create_task(progress(system, stores, shares))

    def on_fault(record: FaultRecord) -> None:
        crashed = workers.restart_crashed()
        took = {name: None if t is None else round(t, 1) for name, t in record.reattached.items()}
        print(
            f"   done in {record.seconds:.1f}s: {record.note}; re-attached {took}"
            + (f"; restarted crashed workers {crashed}" if crashed else "")
        )

    try:
        records = await run_plan(system, plan, on_fault)
        await publishing
        system.current = "settling"
        await settle(system, stores, shares, args.settle_timeout)
        collected = Collected(
            shares=shares,
            published=system.driver.published,
            states=await stores.share_states([share.share_id for share in shares]),
            emails=infra.mail.received,
            notifier_kills=system.notifier_kills,
            events=bus.events,
            audit_counts=await stores.audit_counts(),
            poison=system.poison,
            dead_letters=dead_letter_causes(cli_env, services),
            audit_verified=_audit_verifies(cli_env),
            faults=records,
            unexpected_exits={name: w.unexpected_exits for name, w in workers.processes.items()},
            leftover_messages=leftover_messages(cluster, workers.processes),
            plain_log_lines={
                name: _plain_lines(worker.log_file) for name, worker in workers.processes.items()
            },
            started=system.started,
        )
    finally:
        reporter.cancel()
        publishing.cancel()
        await stores.close()
    findings = analyse(collected)
    print(render(findings, records))
    print(
        f"\nlogs: {infra.log_dir}  (readiness: {readiness.mode}; "
        f"republished after no confirm: {bus.republished})"
    )
    return EXIT_INVARIANT if findings.failures else 0


def _plain_lines(log_file: Path) -> int:
    with log_file.open("rb") as lines:
        return sum(1 for line in lines if line.strip() and not line.startswith(b"{"))


def _audit_verifies(env: dict[str, str]) -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "blume_share", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    print(f"audit verify (exit {done.returncode}): {done.stdout.strip()[-600:]}")
    return done.returncode == 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):  # progress must show as it happens, piped too
        sys.stdout.reconfigure(line_buffering=True)
    run_tag = secrets.token_hex(3)
    workdir = Path(tempfile.mkdtemp(prefix=f"blume-chaos-{run_tag}-"))
    workdir.chmod(0o711)  # PostgreSQL's own user must reach its data directory inside
    log_dir = (args.log_dir or Path(".blume/chaos") / run_tag).resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    infra = Infrastructure(workdir, log_dir)
    started = time.monotonic()
    print(
        f"chaos run {run_tag}: {args.shares} shares, {args.poison} poison messages, "
        f"SMTP outage {args.smtp_outage:.0f}s; data {workdir}, logs {log_dir}"
    )
    with interrupts_as_keyboard_interrupt():
        try:
            infra.mail = MailServer()
            infra.mail.accept()
            infra.postgres = PostgresCluster(
                workdir, postgres_bin_dir(args.postgres_bin), args.postgres_os_user
            )
            infra.postgres.start()
            infra.cluster = RabbitCluster(
                workdir,
                run_tag,
                rabbitmq_bin_dir(args.rabbitmq_bin),
                erlang_cookie(args.erlang_cookie_file),
            )
            infra.cluster.start()
            print(
                f"cluster up: {', '.join(node.name for node in infra.cluster.nodes)}; "
                f"PostgreSQL on {infra.postgres.port}; SMTP on {infra.mail.port}"
            )
            code = asyncio.run(drive(args, infra, run_tag))
        except KeyboardInterrupt:
            print("interrupted: tearing everything down")
            code = 130
        except Exception as error:  # noqa: BLE001 - reported, then everything is torn down
            print(f"the suite could not run: {type(error).__name__}: {error}")
            code = EXIT_SUITE
        finally:
            infra.tear_down(args.keep)
    print(f"chaos run {run_tag} took {time.monotonic() - started:.0f}s, exit {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
