"""Compliance on real PostgreSQL: roles and privileges, triggers, signed checkpoints, purging.

The application's work runs as ``blume_app`` and the purge as ``blume_audit_purger`` (each
session does ``SET ROLE``, as a login granted the role would be); tampering runs as the
superuser, with the triggers off, and is caught by the hash chain or the checkpoints, each
finding naming the chain and seq.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from blume_audit_sink import retention, signing_keys
from blume_audit_sink.append import append_entries
from blume_audit_sink.checkpoints import checkpoint_chains
from blume_audit_sink.hashing import hashed_fields, record_hash
from blume_audit_sink.problems import ProblemKind
from blume_audit_sink.sealer import seal_all
from blume_audit_sink.settings import AuditSettings
from blume_audit_sink.verify import VerifyReport, verify_store
from blume_contracts.audit_entry import prepare
from blume_runtime.db import Database, utcnow
from blume_runtime.settings import Settings
from blume_runtime.unit_of_work import stage_for_audit
from blume_share.schema import upgrade
from pydantic import SecretStr
from sqlalchemy import event

pytestmark = pytest.mark.integration

TENANT = "demo-hospital"
OTHER = "north-clinic"
EVENTS = 12
Superuser = psycopg.Connection[Any]


def database_as(url: str, role: str) -> Database:
    """The sink's engine, every connection switched to ``role`` for its whole session."""
    db = Database(url, stages_audit=True)

    @event.listens_for(db.engine.sync_engine, "connect")
    def _set_role(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute(f"SET ROLE {role}")
        cursor.close()
        connection.commit()

    return db


@pytest.fixture
def signing() -> str:
    return signing_keys.new_private_key_text()


@pytest.fixture
def verifying(signing: str) -> tuple[Settings, AuditSettings]:
    """Settings as in production: the configured key signs and verifies; no embedded key."""
    return Settings(amqp_url=SecretStr("amqp://unused/")), AuditSettings(
        audit_signing_key=SecretStr(signing)
    )


@pytest.fixture
async def app_db(migrated_database_url: str) -> AsyncIterator[Database]:
    db = database_as(migrated_database_url, "blume_app")
    yield db
    await db.dispose()


async def fill(db: Database, make_event: Any, tenant: str, count: int, age_days: int = 0) -> None:
    """``count`` events: recent ones staged and sealed as the worker and sealer do them;
    aged ones appended as if received ``age_days`` ago."""
    events = [
        make_event(
            "share.accepted",
            {"share_id": f"shr_{uuid.uuid4().hex}", "study": {"patient": {"mrn": "MRN-1"}}},
            tenant=tenant,
        )
        for _ in range(count)
    ]
    if age_days:
        received = utcnow() - timedelta(days=age_days)
        async with db.transaction() as session:
            await append_entries(session, [prepare(e, received_at=received) for e in events])
        return
    for staged in events:
        async with db.transaction() as session:
            assert stage_for_audit(session, staged)
    await seal_all(db)


async def sign(db: Database, signing: str, directory: Path | None) -> None:
    async with db.transaction() as session:
        await checkpoint_chains(
            session, signing_keys.private_key_from_text(signing), directory, cadence=None
        )


async def verified(
    db: Database, verifying: tuple[Settings, AuditSettings], *dirs: Path
) -> VerifyReport:
    async with db.transaction() as session:
        return await verify_store(session, *verifying, checkpoint_dirs=dirs)


def superuser(url: str, *, triggers: bool) -> Superuser:
    connection = psycopg.connect(url, autocommit=True)
    if not triggers:
        connection.execute("SET session_replication_role = replica")
    return connection


# ------------------------------------------------------------------- roles and privileges


def test_migrating_another_database_in_the_cluster_reuses_the_roles(
    migrated_database_url: str, postgres_admin_url: str
) -> None:
    """Roles are cluster-wide: a second database migrates cleanly, and so does a re-run."""
    name = f"blume_test_{uuid.uuid4().hex[:12]}"
    second = urlunsplit(urlsplit(postgres_admin_url)._replace(path=f"/{name}"))
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        upgrade(second)
        upgrade(second)
        with psycopg.connect(second) as connection:
            roles = {
                row[0]
                for row in connection.execute(
                    "SELECT rolname FROM pg_roles WHERE rolname LIKE 'blume\\_%'"
                )
            }
            owner = connection.execute(
                "SELECT tableowner FROM pg_tables WHERE tablename = 'audit_records'"
            ).fetchone()
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert {"blume_audit_owner", "blume_app", "blume_audit_purger"} <= roles
    assert owner == ("blume_audit_owner",)


async def test_the_app_role_appends_seals_and_signs_and_verify_passes(
    app_db: Database, make_event: Any, signing: str, verifying: Any, tmp_path: Path
) -> None:
    """Everything the sink does works with blume_app's INSERT and SELECT on the audit tables."""
    await fill(app_db, make_event, TENANT, 5)
    await sign(app_db, signing, tmp_path)
    report = await verified(app_db, verifying, tmp_path)
    assert (report.ok, report.checked, report.checkpoints) == (True, 5, 1)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_records SET payload = '{}'",
        "DELETE FROM audit_records",
        "TRUNCATE audit_records",
        "UPDATE audit_checkpoints SET head_hash = head_hash",
        "DELETE FROM audit_chain_heads",
        "ALTER TABLE audit_records DISABLE TRIGGER ALL",
        "SELECT audit_purge_through('demo-hospital', 1)",
        "INSERT INTO audit_purges VALUES ('demo-hospital', 1, repeat('a', 64), 1, now(), 'x')",
    ],
)
async def test_the_app_role_may_not_change_remove_or_purge(
    app_db: Database, make_event: Any, migrated_database_url: str, statement: str
) -> None:
    """blume_app gets permission denied (or must-be-owner) for every change but appending."""
    await fill(app_db, make_event, TENANT, 2)
    with psycopg.connect(migrated_database_url) as connection:
        connection.execute("SET ROLE blume_app")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            connection.execute(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_records SET payload = '{}' WHERE seq = 1",
        "DELETE FROM audit_records WHERE seq = 2",
        "TRUNCATE audit_records",
        "UPDATE audit_chain_heads SET seq = 1",
        "DELETE FROM audit_checkpoints",
    ],
)
async def test_triggers_refuse_even_a_superuser(
    app_db: Database, make_event: Any, signing: str, migrated_database_url: str, statement: str
) -> None:
    """With the triggers on, not even the superuser or the owner edits the audit store."""
    await fill(app_db, make_event, TENANT, 3)
    await sign(app_db, signing, None)
    with (
        superuser(migrated_database_url, triggers=True) as connection,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match=r"append-only|forward"),
    ):
        connection.execute(statement)


# ------------------------------------------------------- tampering caught by checkpoints


def _rows(connection: Superuser, tenant: str) -> list[dict[str, Any]]:
    cursor = connection.cursor(row_factory=psycopg.rows.dict_row)
    cursor.execute("SELECT * FROM audit_records WHERE chain_id = %s ORDER BY seq", (tenant,))
    return list(cursor.fetchall())


def _rechain(connection: Superuser, rows: list[dict[str, Any]]) -> None:
    """Renumber and rehash ``rows`` as one consistent chain, and point the head at its end."""
    connection.execute("DELETE FROM audit_records WHERE chain_id = %s", (TENANT,))
    previous = "0" * 64
    for seq, original in enumerate(rows, start=1):
        row = {**original, "seq": seq, "prev_hash": previous}
        row["hash"] = previous = record_hash(previous, hashed_fields(row))
        columns = ", ".join(row)
        connection.execute(
            f"INSERT INTO audit_records ({columns}) VALUES ({', '.join(['%s'] * len(row))})",
            list(row.values()),
        )
    connection.execute(
        "UPDATE audit_chain_heads SET seq = %s, hash = %s WHERE chain_id = %s",
        (len(rows), previous, TENANT),
    )
    # And the database's copies of the checkpoints, which the forger can reach too.
    connection.execute("DELETE FROM audit_checkpoints WHERE chain_id = %s", (TENANT,))


def cut_tail(connection: Superuser) -> None:
    _rechain(connection, _rows(connection, TENANT)[:9])


def edit_and_rehash(connection: Superuser) -> None:
    rows = _rows(connection, TENANT)
    rows[3]["payload"] = '{"share_id":"shr_other"}'
    _rechain(connection, rows)


def delete_and_rehash(connection: Superuser) -> None:
    rows = _rows(connection, TENANT)
    _rechain(connection, rows[:4] + rows[5:])


def insert_and_rehash(connection: Superuser) -> None:
    rows = _rows(connection, TENANT)
    forged = rows[5] | {"event_id": "forged", "event_type": "share.revoked"}
    _rechain(connection, [*rows[:5], forged, *rows[5:]])


def reorder_and_rehash(connection: Superuser) -> None:
    rows = _rows(connection, TENANT)
    rows[2], rows[3] = rows[3], rows[2]
    _rechain(connection, rows)


M, T = ProblemKind.CHECKPOINT_MISMATCH, ProblemKind.TRUNCATED
CHECKPOINTED = {
    # Checkpoints pin seq 4, 8 and 12. Each finding names the first pinned seq that the
    # rewrite reached (its detail gives the range since the last pin that still holds).
    "truncated-tail": (cut_tail, {(10, T)}),
    "edited-seq-4": (edit_and_rehash, {(4, M), (8, M), (12, M)}),
    "deleted-seq-5": (delete_and_rehash, {(8, M), (12, T)}),
    "inserted-at-seq-6": (insert_and_rehash, {(8, M), (12, M)}),
    "reordered-seq-3-4": (reorder_and_rehash, {(4, M), (8, M), (12, M)}),
}


@pytest.mark.parametrize(("change", "expected"), CHECKPOINTED.values(), ids=CHECKPOINTED.keys())
async def test_a_superuser_who_fixes_up_the_hashes_is_caught_by_the_checkpoint_files(
    app_db: Database,
    make_event: Any,
    signing: str,
    verifying: Any,
    migrated_database_url: str,
    tmp_path: Path,
    change: Callable[[Superuser], None],
    expected: set[tuple[int, ProblemKind]],
) -> None:
    """Triggers off, rows rewritten and rehashed, head and DB checkpoints fixed: the chain
    alone looks intact, the write-once files (seq 4, 8, 12) do not; the seq is named."""
    for _ in range(3):
        await fill(app_db, make_event, TENANT, EVENTS // 3)
        await sign(app_db, signing, tmp_path)
    await fill(app_db, make_event, OTHER, 2)
    with superuser(migrated_database_url, triggers=False) as connection:
        change(connection)

    assert (await verified(app_db, verifying)).ok, "the database alone cannot tell"
    report = await verified(app_db, verifying, tmp_path)
    assert {(p.seq, p.kind) for p in report.problems} == expected, report.problems
    assert {p.chain_id for p in report.problems} == {TENANT}


# -------------------------------------------------------------------------------- purge


async def test_only_the_purger_purges_and_only_expired_sealed_segments(
    app_db: Database, make_event: Any, signing: str, verifying: Any, migrated_database_url: str
) -> None:
    """blume_app is refused; blume_audit_purger removes the old sealed segment and no more;
    the chain verifies from the purge's anchor."""
    await fill(app_db, make_event, TENANT, 3, age_days=400)
    await sign(app_db, signing, None)
    await fill(app_db, make_event, TENANT, 2)
    await sign(app_db, signing, None)
    with superuser(migrated_database_url, triggers=True) as owner:
        owner.execute(
            "INSERT INTO audit_retention VALUES (%s, now(), 30, 'privacy office')", (TENANT,)
        )

    async with app_db.transaction() as session:
        plan = await retention.plan_purge(session, TENANT)
    assert plan.through_seq == 3
    with pytest.raises(retention.PurgeRefusedError, match=r"42501|permission"):
        async with app_db.transaction() as session:
            await retention.purge(session, plan)

    purger = database_as(migrated_database_url, "blume_audit_purger")
    try:
        async with purger.transaction() as session:
            assert await retention.purge(session, plan) == 3
        with pytest.raises(retention.PurgeRefusedError, match="not all past"):
            async with purger.transaction() as session:
                await retention.purge(session, retention.PurgePlan(TENANT, 3, 5, 30, ""))
    finally:
        await purger.dispose()
    report = await verified(app_db, verifying)
    assert report.ok, report.problems
    assert (report.checked, [p.through_seq for p in report.purges]) == (2, [3])


async def test_a_legal_hold_stops_the_database_from_purging(
    app_db: Database, make_event: Any, signing: str, migrated_database_url: str
) -> None:
    """Even asked directly, audit_purge_through refuses a segment under a legal hold."""
    await fill(app_db, make_event, TENANT, 3, age_days=400)
    await sign(app_db, signing, None)
    with superuser(migrated_database_url, triggers=True) as owner:
        owner.execute(
            "INSERT INTO audit_legal_holds VALUES ('hold_1', 'place', %s, 'MRN-1', 'case', "
            "now(), 'counsel')",
            (TENANT,),
        )
        owner.execute("INSERT INTO audit_retention VALUES (%s, now(), 30, 'privacy')", (TENANT,))
        owner.execute("SET ROLE blume_audit_purger")
        with pytest.raises(psycopg.errors.RaiseException, match="legal hold"):
            owner.execute("SELECT audit_purge_through(%s, 3)", (TENANT,))
