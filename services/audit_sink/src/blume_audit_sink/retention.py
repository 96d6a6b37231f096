"""Retention and legal hold: how long a tenant's records are kept, and purging what may go.

A purge removes whole sealed segments only: every record up to a checkpoint, none after
it. The checkpoint stays (in the database and in the write-once directory), and the purge
row records its seq and head hash, so the chain still verifies from there on and the
checkpoint chain is untouched.

On PostgreSQL the rules are enforced by ``audit_purge_through`` (migration 0002), which only
``blume_audit_purger`` may call; this module finds the newest checkpoint the rules allow and
asks the database. On SQLite, which has no roles, the same rules run here.
"""

from __future__ import annotations

import getpass
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from blume_runtime.db import as_utc, utcnow
from sqlalchemy import ColumnElement, delete, func, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_audit_sink.models import (
    SCHEMA,
    SEVEN_YEARS_DAYS,
    AuditCheckpoint,
    AuditLegalHold,
    AuditPurge,
    AuditRecord,
    AuditRetention,
)

PLACE, RELEASE = "place", "release"


class PurgeRefusedError(RuntimeError):
    """The rules forbid the purge (nothing sealed past retention, or a legal hold)."""


def operator() -> str:
    """Who runs this command, for the retention and hold records (the OS user)."""
    try:
        return getpass.getuser()[:128]
    except (KeyError, OSError):
        return "unknown"


async def set_retention(session: AsyncSession, chain_id: str, days: int, by: str) -> None:
    if days < 1:
        raise ValueError("retention must be at least one day")
    session.add(AuditRetention(chain_id=chain_id, retention_days=days, set_by=by))
    await session.flush()


async def retention_days(session: AsyncSession, chain_id: str) -> int:
    statement = (
        select(AuditRetention.retention_days)
        .where(col(AuditRetention.chain_id) == chain_id)
        .order_by(col(AuditRetention.effective_at).desc())
        .limit(1)
    )
    return (await session.exec(statement)).first() or SEVEN_YEARS_DAYS


async def place_hold(
    session: AsyncSession, chain_id: str, patient_mrn: str | None, reason: str, by: str
) -> str:
    """Hold a tenant's records (or one patient's): no purge touches them until released."""
    hold = AuditLegalHold(
        hold_id=f"hold_{uuid.uuid4().hex}",
        action=PLACE,
        chain_id=chain_id,
        patient_mrn=patient_mrn,
        reason=reason,
        by=by,
    )
    session.add(hold)
    await session.flush()
    return hold.hold_id


async def release_hold(session: AsyncSession, hold_id: str, reason: str, by: str) -> None:
    placed = await session.get(AuditLegalHold, (hold_id, PLACE))
    if placed is None:
        raise LookupError(f"no legal hold {hold_id}")
    session.add(
        AuditLegalHold(
            hold_id=hold_id,
            action=RELEASE,
            chain_id=placed.chain_id,
            patient_mrn=placed.patient_mrn,
            reason=reason,
            by=by,
        )
    )
    await session.flush()


async def active_holds(session: AsyncSession, chain_id: str | None = None) -> list[AuditLegalHold]:
    released = select(AuditLegalHold.hold_id).where(col(AuditLegalHold.action) == RELEASE)
    statement = select(AuditLegalHold).where(
        col(AuditLegalHold.action) == PLACE, col(AuditLegalHold.hold_id).not_in(released)
    )
    if chain_id is not None:
        statement = statement.where(col(AuditLegalHold.chain_id) == chain_id)
    return list((await session.exec(statement.order_by(col(AuditLegalHold.at)))).all())


@dataclass(frozen=True, slots=True)
class PurgePlan:
    chain_id: str
    after_seq: int
    """Already purged through this seq (0: nothing yet)."""
    through_seq: int | None
    """The newest checkpoint the rules allow purging through; None: nothing may go."""
    retention_days: int
    reason: str
    """Why nothing (more) may go, when ``through_seq`` is None."""


async def _anchor(session: AsyncSession, chain_id: str) -> int:
    statement = select(func.max(AuditPurge.through_seq)).where(col(AuditPurge.chain_id) == chain_id)
    return (await session.exec(statement)).one() or 0


async def _first_seq(
    session: AsyncSession, chain_id: str, after: int, condition: ColumnElement[bool]
) -> int | None:
    statement = select(func.min(AuditRecord.seq)).where(
        col(AuditRecord.chain_id) == chain_id, col(AuditRecord.seq) > after, condition
    )
    return (await session.exec(statement)).one()


async def plan_purge(
    session: AsyncSession, chain_id: str, now: datetime | None = None
) -> PurgePlan:
    """The newest checkpoint below every record still in retention or under a legal hold."""
    after = await _anchor(session, chain_id)
    days = await retention_days(session, chain_id)
    holds = await active_holds(session, chain_id)

    def refused(reason: str) -> PurgePlan:
        return PurgePlan(chain_id, after, None, days, reason)

    if any(hold.patient_mrn is None for hold in holds):
        return refused("a legal hold covers the whole tenant")
    cutoff = as_utc(now or utcnow()) - timedelta(days=days)
    limits = [await _first_seq(session, chain_id, after, col(AuditRecord.recorded_at) >= cutoff)]
    held = sorted({hold.patient_mrn for hold in holds if hold.patient_mrn is not None})
    if held:
        limits.append(
            await _first_seq(session, chain_id, after, col(AuditRecord.patient_mrn).in_(held))
        )
    bound = min((limit - 1 for limit in limits if limit is not None), default=None)
    statement = select(func.max(AuditCheckpoint.seq)).where(
        col(AuditCheckpoint.chain_id) == chain_id, col(AuditCheckpoint.seq) > after
    )
    if bound is not None:
        statement = statement.where(col(AuditCheckpoint.seq) <= bound)
    through = (await session.exec(statement)).one()
    if through is None:
        return refused(
            "no checkpoint seals records that are all past retention and free of legal holds"
        )
    return PurgePlan(chain_id, after, through, days, "")


async def purge(session: AsyncSession, plan: PurgePlan) -> int:
    """Carry out ``plan``; returns the rows removed. The database re-checks every rule."""
    if plan.through_seq is None:
        raise PurgeRefusedError(plan.reason)
    if session.get_bind().dialect.name == "postgresql":
        connection = await session.connection()
        try:
            removed = await connection.execute(
                text(f"SELECT {SCHEMA}.audit_purge_through(:chain_id, :through_seq)"),
                {"chain_id": plan.chain_id, "through_seq": plan.through_seq},
            )
        except DBAPIError as error:
            # The function's own refusals (P0001) and a role without the right (42501).
            state = getattr(error.orig, "sqlstate", None)
            if state not in {"P0001", "42501"}:
                raise
            diag = getattr(error.orig, "diag", None)
            raise PurgeRefusedError(getattr(diag, "message_primary", None) or state) from None
        return int(removed.scalar_one())
    return await _purge_sqlite(session, plan.chain_id, plan.through_seq, plan.after_seq)


async def _purge_sqlite(session: AsyncSession, chain_id: str, through_seq: int, after: int) -> int:
    checkpoint = await session.get(AuditCheckpoint, (chain_id, through_seq))
    record = await session.get(AuditRecord, (chain_id, through_seq))
    if checkpoint is None or record is None or record.hash != checkpoint.head_hash:
        raise PurgeRefusedError(f"no checkpoint matching the records seals seq {through_seq}")
    in_segment = (
        col(AuditRecord.chain_id) == chain_id,
        col(AuditRecord.seq) > after,
        col(AuditRecord.seq) <= through_seq,
    )
    rows = (await session.exec(select(func.count()).where(*in_segment))).one()
    # The purge row first: the delete trigger lets through only rows a purge covers.
    session.add(
        AuditPurge(
            chain_id=chain_id,
            through_seq=through_seq,
            through_hash=checkpoint.head_hash,
            purged_rows=rows,
            purged_by=operator(),
        )
    )
    await session.flush()
    await session.exec(delete(AuditRecord).where(*in_segment))
    return rows
