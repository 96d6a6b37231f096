"""Searching: the records matching a filter, a record as plain JSON, whether a share was seen.

What ``audit query`` and ``audit export``, the compliance API and the disclosure report
select by, on PostgreSQL or the embedded SQLite file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from blume_contracts.audit_entry import Entry
from blume_runtime.db import as_utc
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_audit_sink.models import AuditPending, AuditRecord


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """What ``audit query``, ``audit export`` and the API select by; None means any."""

    tenant_id: str | None = None
    patient_mrn: str | None = None
    study_uid: str | None = None
    share_id: str | None = None
    sender_user_id: str | None = None
    recipient_email: str | None = None
    event_type: str | None = None
    event_types: tuple[str, ...] | None = None
    correlation_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def apply_filter(statement: Any, wanted: RecordFilter) -> Any:
    equal_to = (
        (AuditRecord.chain_id, wanted.tenant_id),
        (AuditRecord.patient_mrn, wanted.patient_mrn),
        (AuditRecord.study_uid, wanted.study_uid),
        (AuditRecord.share_id, wanted.share_id),
        (AuditRecord.sender_user_id, wanted.sender_user_id),
        (AuditRecord.recipient_email, wanted.recipient_email and wanted.recipient_email.lower()),
        (AuditRecord.event_type, wanted.event_type),
        (AuditRecord.correlation_id, wanted.correlation_id),
    )
    for column, value in equal_to:
        if value is not None:
            statement = statement.where(col(column) == value)
    if wanted.event_types is not None:
        statement = statement.where(col(AuditRecord.event_type).in_(wanted.event_types))
    # SQLite compares timestamps as text written in UTC, so bounds must be UTC too.
    if wanted.since is not None:
        statement = statement.where(col(AuditRecord.occurred_at) >= as_utc(wanted.since))
    if wanted.until is not None:
        statement = statement.where(col(AuditRecord.occurred_at) < as_utc(wanted.until))
    return statement


async def find(
    session: AsyncSession, wanted: RecordFilter, *, limit: int = 100, offset: int = 0
) -> list[AuditRecord]:
    """Records matching every filter, by occurrence time (``since`` <= time < ``until``).

    A naive ``since``/``until`` is taken as UTC; timestamps come back aware, in UTC.
    """
    if limit < 1 or offset < 0:
        raise ValueError("limit must be at least 1 and offset at least 0")
    statement = (
        apply_filter(select(AuditRecord), wanted)
        .order_by(col(AuditRecord.occurred_at), col(AuditRecord.chain_id), col(AuditRecord.seq))
        .limit(limit)
        .offset(offset)
    )
    return list((await session.exec(statement)).all())


def record_as_json(record: AuditRecord) -> dict[str, Any]:
    """A record as plain JSON: what ``--format jsonl`` prints and the API returns."""
    return {
        "chain_id": record.chain_id,
        "seq": record.seq,
        "event_id": record.event_id,
        "event_source": record.event_source,
        "event_type": record.event_type,
        "event_code": record.event_code,
        "action": record.action,
        "outcome": record.outcome,
        "occurred_at": as_utc(record.occurred_at).isoformat(),
        "recorded_at": as_utc(record.recorded_at).isoformat(),
        "share_id": record.share_id,
        "correlation_id": record.correlation_id,
        "patient_mrn": record.patient_mrn,
        "study_uid": record.study_uid,
        "sender_user_id": record.sender_user_id,
        "recipient_email": record.recipient_email,
        "agents": json.loads(record.agents) if record.agents else [],
        "data": json.loads(record.payload),
        "prev_hash": record.prev_hash,
        "hash": record.hash,
        "hash_version": record.hash_version,
    }


async def share_seen(session: AsyncSession, share_id: str) -> bool:
    """Whether the store holds any event of ``share_id``, chained or still staged for sealing.

    A share's request is recorded under the share id it will get, so this is true from the
    moment the sink receives the request, before the dispatcher has decided anything.
    """
    chained = select(AuditRecord.seq).where(col(AuditRecord.share_id) == share_id).limit(1)
    if (await session.exec(chained)).first() is not None:
        return True
    marker = Entry.share_id_json(share_id)
    staged = select(AuditPending.id).where(
        col(AuditPending.entry).contains(marker, autoescape=True)
    )
    return (await session.exec(staged.limit(1))).first() is not None
