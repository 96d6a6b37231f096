"""Retention, legal holds and purging whole sealed segments, on the embedded store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from blume_audit_sink import retention, signing_keys
from blume_audit_sink.append import append_entries
from blume_audit_sink.checkpoints import checkpoint_chains
from blume_audit_sink.models import SEVEN_YEARS_DAYS, AuditPurge
from blume_audit_sink.problems import ProblemKind
from blume_audit_sink.settings import AuditSettings
from blume_audit_sink.verify import VerifyReport, verify_store
from blume_contracts.audit_entry import prepare
from blume_runtime.db import Database, utcnow
from blume_runtime.settings import Settings
from sqlalchemy import text

TENANT = "demo-hospital"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The embedded default: its generated key signs and verifies the checkpoints."""
    return Settings(state_dir=tmp_path / "state")


async def add(db: Database, make_event: Any, mrns: list[str], age_days: int) -> None:
    """One record per MRN, received ``age_days`` ago."""
    received = utcnow() - timedelta(days=age_days)
    entries = [
        prepare(
            make_event(
                "study.send.requested",
                {"study": {"patient": {"mrn": mrn}}},
                tenant=TENANT,
            ),
            received_at=received,
        )
        for mrn in mrns
    ]
    async with db.transaction() as session:
        await append_entries(session, entries)


async def checkpoint(db: Database, settings: Settings) -> None:
    key = signing_keys.signing_key(settings, AuditSettings())
    assert key is not None
    async with db.transaction() as session:
        await checkpoint_chains(session, key, None, cadence=None)


@pytest.fixture
async def aged(sqlite_db: Database, make_event: Any, settings: Settings) -> Database:
    """Seq 1-4 received 400 days ago (sealed at 4), seq 5-6 today (sealed at 6); 30 days kept."""
    await add(sqlite_db, make_event, ["MRN-A", "MRN-B", "MRN-A", "MRN-C"], age_days=400)
    await checkpoint(sqlite_db, settings)
    await add(sqlite_db, make_event, ["MRN-A", "MRN-D"], age_days=0)
    await checkpoint(sqlite_db, settings)
    async with sqlite_db.transaction() as session:
        await retention.set_retention(session, TENANT, 30, "tester")
    return sqlite_db


async def plan(db: Database) -> retention.PurgePlan:
    async with db.transaction() as session:
        return await retention.plan_purge(session, TENANT)


async def purge(db: Database) -> int:
    async with db.transaction() as session:
        return await retention.purge(session, await retention.plan_purge(session, TENANT))


async def verified(db: Database, settings: Settings) -> VerifyReport:
    async with db.transaction() as session:
        return await verify_store(session, settings, AuditSettings())


async def test_the_default_retention_is_seven_years(sqlite_db: Database) -> None:
    """A tenant with no retention of its own keeps records seven years."""
    async with sqlite_db.transaction() as session:
        assert await retention.retention_days(session, "north-clinic") == SEVEN_YEARS_DAYS


async def test_a_purge_removes_whole_sealed_segments_past_retention_only(
    aged: Database, settings: Settings
) -> None:
    """Seq 1-4 go (sealed, old); 5-6 stay (young); the chain still verifies from seq 4's anchor."""
    assert (await plan(aged)).through_seq == 4
    assert await purge(aged) == 4

    report = await verified(aged, settings)
    assert report.ok, report.problems
    assert (report.checked, report.checkpoints) == (2, 2)
    assert [(p.through_seq, p.purged_rows) for p in report.purges] == [(4, 4)]
    again = await plan(aged)
    assert again.through_seq is None
    assert "no checkpoint" in again.reason


async def test_nothing_within_retention_is_purged(aged: Database) -> None:
    """With 500 days kept, even the old segment must stay."""
    async with aged.transaction() as session:
        await retention.set_retention(session, TENANT, 500, "tester")
    assert (await plan(aged)).through_seq is None
    with pytest.raises(retention.PurgeRefusedError):
        await purge(aged)


async def test_a_tenant_wide_legal_hold_blocks_until_released(aged: Database) -> None:
    """While the hold stands nothing goes; its release (recorded beside it) lifts the block."""
    async with aged.transaction() as session:
        hold = await retention.place_hold(session, TENANT, None, "case 2026-17", "counsel")
    blocked = await plan(aged)
    assert (blocked.through_seq, blocked.reason) == (None, "a legal hold covers the whole tenant")
    async with aged.transaction() as session:
        await retention.release_hold(session, hold, "case closed", "counsel")
        assert await retention.active_holds(session, TENANT) == []
    assert (await plan(aged)).through_seq == 4


async def test_a_patient_hold_keeps_the_segments_holding_that_patient(
    sqlite_db: Database, make_event: Any, settings: Settings
) -> None:
    """A hold on MRN-C (seq 4) stops the purge at the checkpoint before it (seq 2)."""
    await add(sqlite_db, make_event, ["MRN-A", "MRN-B"], age_days=400)
    await checkpoint(sqlite_db, settings)
    await add(sqlite_db, make_event, ["MRN-A", "MRN-C"], age_days=400)
    await checkpoint(sqlite_db, settings)
    async with sqlite_db.transaction() as session:
        await retention.set_retention(session, TENANT, 30, "tester")
        await retention.place_hold(session, TENANT, "MRN-C", "complaint", "privacy office")
    assert (await plan(sqlite_db)).through_seq == 2


async def test_rows_cannot_be_deleted_except_by_a_recorded_purge(aged: Database) -> None:
    """The delete trigger lets through only rows a purge row covers."""
    with pytest.raises(Exception, match="append-only"):
        async with aged.transaction() as session:
            await session.exec(text("DELETE FROM audit_records WHERE seq = 1"))


async def test_a_purge_no_checkpoint_vouches_for_is_reported(
    aged: Database, settings: Settings
) -> None:
    """Someone inserts a purge row at seq 3 (no checkpoint there) to delete rows: verify says so."""
    async with aged.transaction() as session:
        session.add(
            AuditPurge(
                chain_id=TENANT, through_seq=3, through_hash="a" * 64, purged_rows=3, purged_by="x"
            )
        )
        await session.flush()
        await session.exec(text("DELETE FROM audit_records WHERE seq <= 3"))
    report = await verified(aged, settings)
    assert (3, ProblemKind.PURGE_UNANCHORED) in {(p.seq, p.kind) for p in report.problems}
