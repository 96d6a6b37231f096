"""The sealer sleeps while nothing is staged, and a staging commit wakes it at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from blume_audit_sink.checkpoints import Cadence
from blume_audit_sink.sealer import ChainSealer, pending_count
from blume_audit_sink.settings import AuditSettings
from blume_runtime.db import Database
from blume_runtime.unit_of_work import stage_for_audit
from prometheus_client import REGISTRY

from .test_audit_service import TENANT, stored_records

STATEMENTS = "blume_db_statements_total"
OLD_POLL_SECONDS = 0.2
"""The fallback round the sealer used to poll at: one round trip each."""
WOKEN_WITHIN_SECONDS = 5.0
"""A woken sealer chains a committed row well within this; its fallback round is 30 s."""


def statements() -> float:
    return REGISTRY.get_sample_value(STATEMENTS) or 0.0


async def settled_statements(limit: float = 10.0) -> float:
    """The statement count once it has not moved for a few old poll rounds."""
    started = time.monotonic()
    last, since = statements(), time.monotonic()
    while time.monotonic() - started < limit:
        await asyncio.sleep(OLD_POLL_SECONDS / 4)
        now = statements()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 2 * OLD_POLL_SECONDS:
            break
    return last


def sealer_on(db: Database, interval_seconds: float) -> ChainSealer:
    settings = AuditSettings()
    return ChainSealer(
        database_url=db.url,
        key=None,
        directory=None,
        cadence=Cadence(
            settings.audit_checkpoint_every_events, settings.audit_checkpoint_every_seconds
        ),
        batch_size=settings.audit_seal_batch_size,
        interval_seconds=interval_seconds,
    )


@pytest.fixture
async def idle_sealer(sqlite_db: Database) -> AsyncIterator[ChainSealer]:
    """A started sealer with the shipped settings, past its first round."""
    sealer = sealer_on(sqlite_db, AuditSettings().audit_seal_interval_seconds)
    await sealer.start()
    await settled_statements()
    yield sealer
    await sealer.stop()


async def test_an_idle_sealer_does_not_query_the_database(idle_sealer: ChainSealer) -> None:
    """With nothing staged, the sealer sends no statement over many of its old poll rounds."""
    before = statements()
    await asyncio.sleep(8 * OLD_POLL_SECONDS)
    assert statements() == before


async def test_a_row_is_sealed_promptly_once_its_slow_staging_commits(
    idle_sealer: ChainSealer, sqlite_db: Database, make_event: Any
) -> None:
    """A staging transaction that commits long after staging (past the sealer's linger)
    still wakes the sleeping sealer, which chains the row long before its 30 s fallback
    round would (within WOKEN_WITHIN_SECONDS: room for a loaded CI machine)."""
    event = make_event("share.accepted", {"share_id": "shr_" + "b" * 32}, tenant=TENANT)
    async with sqlite_db.transaction() as session:
        assert stage_for_audit(session, event)
        await asyncio.sleep(5 * OLD_POLL_SECONDS)
    committed = time.monotonic()
    while time.monotonic() - committed < WOKEN_WITHIN_SECONDS:
        if [record.event_id for record in await stored_records(sqlite_db)] == [event.id]:
            break
        await asyncio.sleep(0.02)
    assert [record.event_id for record in await stored_records(sqlite_db)] == [event.id]
    async with sqlite_db.transaction() as session:
        assert await pending_count(session) == 0


async def test_a_rolled_back_staging_does_not_wake_the_sealer(
    idle_sealer: ChainSealer, sqlite_db: Database, make_event: Any
) -> None:
    """Only a commit wakes the sealer: a staging rolled back leaves it asleep, no query sent."""
    event = make_event("share.accepted", {"share_id": "shr_" + "c" * 32}, tenant=TENANT)

    async def failing_handler() -> None:
        async with sqlite_db.transaction() as session:
            assert stage_for_audit(session, event)
            raise RuntimeError("the handler failed")

    with pytest.raises(RuntimeError):
        await failing_handler()
    before = statements()
    await asyncio.sleep(4 * OLD_POLL_SECONDS)
    assert statements() == before
    assert await stored_records(sqlite_db) == []
