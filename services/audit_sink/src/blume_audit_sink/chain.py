"""The hash chain: append an event, verify the chains, query the records.

Everything here works through a session the caller owns, so the worker's append commits
with its inbox row, and the CLI's ``audit verify`` and ``audit query`` run the same code
on PostgreSQL or on the embedded SQLite file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from blume_contracts.envelope import RawEvent
from blume_contracts.registry import protect_for_audit
from blume_runtime.db import as_utc, utcnow
from pydantic_core import to_jsonable_python
from sqlalchemy import Table, exists
from sqlalchemy import select as sql_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_audit_sink.models import GENESIS_HASH, AuditChainHead, AuditRecord

HASHED_COLUMNS: Final = (
    "chain_id",
    "seq",
    "event_id",
    "event_source",
    "event_type",
    "occurred_at",
    "recorded_at",
    "share_id",
    "correlation_id",
    "study_uid",
    "payload",
)

_RECORDS: Final[Table] = AuditRecord.__table__  # type: ignore[attr-defined]
_HEADS: Final[Table] = AuditChainHead.__table__  # type: ignore[attr-defined]

# Values copied into the indexed columns. Anything else (data that broke its contract can
# hold any JSON) stays in the payload only, so a bad value can never fail the insert.
_INDEXABLE = re.compile(r"^[\x21-\x7e]{1,256}$")


def canonical_json(obj: Any) -> str:
    """The one JSON spelling of ``obj``: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) over the previous record's hash and this record's hashed columns."""
    return hashlib.sha256(f"{prev_hash}\n{canonical_json(fields)}".encode()).hexdigest()


def hashed_fields(values: Mapping[Any, Any]) -> dict[str, Any]:
    """The hashed columns of a record (or a row's mapping), timestamps as UTC ISO 8601.

    SQLite hands timestamps back naive and PostgreSQL in the session's time zone; both
    must hash as they did when the record was appended.
    """
    fields = {name: values[name] for name in HASHED_COLUMNS}
    for name in ("occurred_at", "recorded_at"):
        fields[name] = as_utc(fields[name]).isoformat()
    return fields


def _indexable(value: Any) -> str | None:
    return value if isinstance(value, str) and _INDEXABLE.match(value) else None


def _share_id(data: Any) -> str | None:
    return _indexable(data.get("share_id")) if isinstance(data, dict) else None


def _study_uid(data: Any) -> str | None:
    """``data.study.study_instance_uid`` (a send request) or ``data.study_instance_uid``."""
    if not isinstance(data, dict):
        return None
    study = data.get("study")
    if isinstance(study, dict) and "study_instance_uid" in study:
        return _indexable(study["study_instance_uid"])
    return _indexable(data.get("study_instance_uid"))


async def _lock_head(session: AsyncSession, chain_id: str) -> AuditChainHead | None:
    statement = (
        select(AuditChainHead)
        .where(AuditChainHead.chain_id == chain_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.exec(statement)).first()


async def _lock_or_create_head(session: AsyncSession, chain_id: str) -> AuditChainHead:
    head = await _lock_head(session, chain_id)
    if head is not None:
        return head
    # Two first events of a tenant may race to create its chain: the loser's insert does
    # nothing, and its lock then waits for the winner's commit instead of failing.
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.exec(
        insert(AuditChainHead)
        .values(chain_id=chain_id, seq=0, hash=GENESIS_HASH)
        .on_conflict_do_nothing(index_elements=["chain_id"])
    )
    head = await _lock_head(session, chain_id)
    if head is None:  # only if someone deletes the head between our two statements
        raise RuntimeError(f"audit chain head for {chain_id!r} vanished")
    return head


async def _already_recorded(session: AsyncSession, event: RawEvent) -> bool:
    statement = select(AuditRecord.seq).where(
        AuditRecord.event_source == event.source, AuditRecord.event_id == event.id
    )
    return (await session.exec(statement)).first() is not None


async def append(session: AsyncSession, event: RawEvent) -> AuditRecord | None:
    """Append ``event`` to its tenant's chain; None if (source, id) is already recorded.

    Secrets in the data are replaced by fingerprints first. The head is locked before the
    duplicate check, so a concurrent append of the same event is seen once it commits.
    """
    head = await _lock_or_create_head(session, event.tenantid)
    if await _already_recorded(session, event):
        return None
    data = to_jsonable_python(event.data)
    record = AuditRecord(
        chain_id=event.tenantid,
        seq=head.seq + 1,
        event_id=event.id,
        event_source=event.source,
        event_type=event.type,
        # SQLite drops the offset when it stores a timestamp: store UTC so it reads back equal.
        occurred_at=as_utc(event.time),
        recorded_at=utcnow(),
        share_id=_share_id(data),
        correlation_id=event.correlationid,
        study_uid=_study_uid(data),
        payload=canonical_json(protect_for_audit(data)),
        prev_hash=head.hash,
        hash="",
    )
    record.hash = record_hash(record.prev_hash, hashed_fields(record.model_dump()))
    head.seq = record.seq
    head.hash = record.hash
    session.add(record)
    session.add(head)
    await session.flush()
    return record


class ProblemKind(StrEnum):
    HASH_MISMATCH = "hash_mismatch"
    """The row's columns no longer produce its hash: it was edited."""
    BROKEN_LINK = "broken_link"
    """The row's prev_hash is not the previous row's hash: rows inserted, deleted or moved."""
    SEQ_GAP = "seq_gap"
    """The row's seq does not follow the previous row's."""
    HEAD_MISMATCH = "head_mismatch"
    """The head disagrees with the chain's last row: rows cut off the end, or head edited."""
    MISSING_HEAD = "missing_head"
    """The chain has rows but no head."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding. ``detail`` holds sequence numbers and hashes only, never PHI."""

    chain_id: str
    seq: int
    kind: ProblemKind
    detail: str


@dataclass(slots=True)
class VerifyReport:
    checked: int = 0
    """Rows read."""
    chains: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(slots=True)
class _ChainWalk:
    """Where the walk through one chain stands: the seq and hash the next row must link to."""

    chain_id: str
    last_seq: int = 0
    last_hash: str = GENESIS_HASH


def _check_row(walk: _ChainWalk, row: Mapping[Any, Any]) -> list[Problem]:
    problems: list[Problem] = []
    seq: int = row["seq"]
    if seq != walk.last_seq + 1:
        problems.append(
            Problem(
                walk.chain_id,
                seq,
                ProblemKind.SEQ_GAP,
                f"expected seq {walk.last_seq + 1}, found {seq}",
            )
        )
    if row["prev_hash"] != walk.last_hash:
        problems.append(
            Problem(
                walk.chain_id,
                seq,
                ProblemKind.BROKEN_LINK,
                f"prev_hash {row['prev_hash']} is not the hash {walk.last_hash} "
                f"of the preceding row (seq {walk.last_seq})",
            )
        )
    # Recomputed over the row's own prev_hash, so an edit is reported at the edited row
    # alone and a broken link only where the link breaks.
    recomputed = record_hash(row["prev_hash"], hashed_fields(row))
    if recomputed != row["hash"]:
        problems.append(
            Problem(
                walk.chain_id,
                seq,
                ProblemKind.HASH_MISMATCH,
                f"stored hash {row['hash']} differs from recomputed {recomputed}",
            )
        )
    walk.last_seq = seq
    walk.last_hash = row["hash"]
    return problems


def _check_head(walk: _ChainWalk, head: AuditChainHead | None) -> list[Problem]:
    if head is None:
        return [
            Problem(
                walk.chain_id,
                walk.last_seq,
                ProblemKind.MISSING_HEAD,
                f"rows end at seq {walk.last_seq} but the chain has no head",
            )
        ]
    if head.seq == walk.last_seq and head.hash == walk.last_hash:
        return []
    # The first seq where rows and head disagree: the first cut-off row, the first row the
    # head does not know about, or the last row when only the hash differs.
    seq = walk.last_seq if head.seq == walk.last_seq else min(head.seq, walk.last_seq) + 1
    return [
        Problem(
            walk.chain_id,
            seq,
            ProblemKind.HEAD_MISMATCH,
            f"head is seq {head.seq} hash {head.hash}; "
            f"rows end at seq {walk.last_seq} hash {walk.last_hash}",
        )
    ]


async def verify(session: AsyncSession, chain_id: str | None = None) -> VerifyReport:
    """Walk every chain (or one) in order and report each break with its chain and seq.

    Each row comes with its chain's head from the same statement, so rows and heads are one
    snapshot at any isolation level and an append racing the walk is never taken for
    tampering. Rows are streamed as plain rows, not ORM objects, so memory stays flat
    however long the chains are.
    """
    rows_query = (
        sql_select(*_RECORDS.c, _HEADS.c.seq.label("head_seq"), _HEADS.c.hash.label("head_hash"))
        .select_from(_RECORDS.outerjoin(_HEADS, _HEADS.c.chain_id == _RECORDS.c.chain_id))
        .order_by(_RECORDS.c.chain_id, _RECORDS.c.seq)
    )
    # A head whose chain has no rows in its own snapshot: fine only before the first append.
    orphan_heads_query = (
        select(AuditChainHead)
        .where(~exists().where(col(AuditRecord.chain_id) == col(AuditChainHead.chain_id)))
        .order_by(col(AuditChainHead.chain_id))
    )
    if chain_id is not None:
        rows_query = rows_query.where(_RECORDS.c.chain_id == chain_id)
        orphan_heads_query = orphan_heads_query.where(col(AuditChainHead.chain_id) == chain_id)

    report = VerifyReport()
    walked: set[str] = set()
    walk: _ChainWalk | None = None
    head: AuditChainHead | None = None
    stream = await session.stream(rows_query.execution_options(yield_per=500))
    async for row in stream.mappings():
        if walk is None or row["chain_id"] != walk.chain_id:
            if walk is not None:
                report.problems.extend(_check_head(walk, head))
            walk = _ChainWalk(row["chain_id"])
            walked.add(walk.chain_id)
            head = _head_of(row)
            report.chains += 1
        report.problems.extend(_check_row(walk, row))
        report.checked += 1
    if walk is not None:
        report.problems.extend(_check_head(walk, head))
    for orphan in (await session.exec(orphan_heads_query)).all():
        # Already judged by its rows; found here only if they vanished after that snapshot.
        if orphan.chain_id in walked:
            continue
        report.chains += 1
        report.problems.extend(_check_head(_ChainWalk(orphan.chain_id), orphan))
    return report


def _head_of(row: Mapping[Any, Any]) -> AuditChainHead | None:
    if row["head_seq"] is None:
        return None
    return AuditChainHead(chain_id=row["chain_id"], seq=row["head_seq"], hash=row["head_hash"])


async def query(
    session: AsyncSession,
    *,
    share_id: str | None = None,
    study_uid: str | None = None,
    correlation_id: str | None = None,
    event_type: str | None = None,
    tenant_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditRecord]:
    """Records matching every given filter, by occurrence time (``since`` <= time < ``until``).

    A naive ``since``/``until`` is taken as UTC. On SQLite the returned timestamps are
    naive UTC: read them through ``blume_runtime.db.as_utc``.
    """
    if limit < 1 or offset < 0:
        raise ValueError("limit must be at least 1 and offset at least 0")
    statement = select(AuditRecord)
    equal_to = (
        (AuditRecord.share_id, share_id),
        (AuditRecord.study_uid, study_uid),
        (AuditRecord.correlation_id, correlation_id),
        (AuditRecord.event_type, event_type),
        (AuditRecord.chain_id, tenant_id),
    )
    for column, wanted in equal_to:
        if wanted is not None:
            statement = statement.where(col(column) == wanted)
    # SQLite compares timestamps as text written in UTC, so bounds must be UTC too.
    if since is not None:
        statement = statement.where(col(AuditRecord.occurred_at) >= as_utc(since))
    if until is not None:
        statement = statement.where(col(AuditRecord.occurred_at) < as_utc(until))
    statement = (
        statement.order_by(
            col(AuditRecord.occurred_at), col(AuditRecord.chain_id), col(AuditRecord.seq)
        )
        .limit(limit)
        .offset(offset)
    )
    return list((await session.exec(statement)).all())
