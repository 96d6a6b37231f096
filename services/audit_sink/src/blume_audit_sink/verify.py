"""Verifying: walk every chain against its hashes, its head and the signed checkpoints.

``verify`` walks the rows; ``verify_store`` first checks every checkpoint (the database's
copies and any files given) and holds the walk against those whose signatures hold. Both
run through a session the caller owns, on PostgreSQL or the embedded SQLite file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from blume_runtime.settings import Settings
from sqlalchemy import Table, exists
from sqlalchemy import select as sql_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_audit_sink import checkpoints, signing_keys
from blume_audit_sink.hashing import hashed_fields, record_hash
from blume_audit_sink.models import GENESIS_HASH, AuditChainHead, AuditPurge, AuditRecord
from blume_audit_sink.problems import Problem, ProblemKind
from blume_audit_sink.sealer import pending_count
from blume_audit_sink.settings import AuditSettings

_RECORDS: Final[Table] = AuditRecord.__table__  # type: ignore[attr-defined]
_HEADS: Final[Table] = AuditChainHead.__table__  # type: ignore[attr-defined]


@dataclass(slots=True)
class VerifyReport:
    checked: int = 0
    """Rows read."""
    chains: int = 0
    problems: list[Problem] = field(default_factory=list)
    checkpoints: int = 0
    """Valid signed checkpoints the rows were held against."""
    purges: list[AuditPurge] = field(default_factory=list)
    """Purged ranges the walk started after (informational)."""
    pending: int = 0
    """Events received but not yet sealed into their chains (informational)."""

    @property
    def ok(self) -> bool:
        return not self.problems


Pins = Mapping[str, Mapping[int, str]]
"""Chain id -> seq -> head hash, from checkpoints whose signatures held."""


@dataclass(slots=True)
class _ChainWalk:
    """Where the walk through one chain stands: the seq and hash the next row must link to."""

    chain_id: str
    pins: Mapping[int, str]
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
    pinned = walk.pins.get(seq)
    if pinned is not None and pinned != row["hash"]:
        since = max((s for s in walk.pins if s < seq), default=0)
        problems.append(
            Problem(
                walk.chain_id,
                seq,
                ProblemKind.CHECKPOINT_MISMATCH,
                f"signed checkpoint pins hash {pinned} at seq {seq}, the row has {row['hash']}: "
                f"rows after seq {since} up to {seq} were rewritten",
            )
        )
    walk.last_seq = seq
    walk.last_hash = row["hash"]
    return problems


def _check_head(walk: _ChainWalk, head: tuple[int, str] | None) -> list[Problem]:
    problems = _check_pinned_tail(walk)
    if head is None:
        return [
            *problems,
            Problem(
                walk.chain_id,
                walk.last_seq,
                ProblemKind.MISSING_HEAD,
                f"rows end at seq {walk.last_seq} but the chain has no head",
            ),
        ]
    head_seq, head_hash = head
    if head_seq == walk.last_seq and head_hash == walk.last_hash:
        return problems
    # The first seq where rows and head disagree: the first cut-off row, the first row the
    # head does not know about, or the last row when only the hash differs.
    seq = walk.last_seq if head_seq == walk.last_seq else min(head_seq, walk.last_seq) + 1
    return [
        *problems,
        Problem(
            walk.chain_id,
            seq,
            ProblemKind.HEAD_MISMATCH,
            f"head is seq {head_seq} hash {head_hash}; "
            f"rows end at seq {walk.last_seq} hash {walk.last_hash}",
        ),
    ]


def _check_pinned_tail(walk: _ChainWalk) -> list[Problem]:
    """A checkpoint beyond the last row vouches for rows that are gone, whatever the head says."""
    newest = max(walk.pins, default=0)
    if newest <= walk.last_seq:
        return []
    return [
        Problem(
            walk.chain_id,
            walk.last_seq + 1,
            ProblemKind.TRUNCATED,
            f"signed checkpoint vouches for seq {newest} (hash {walk.pins[newest]}); "
            f"rows end at seq {walk.last_seq}",
        )
    ]


async def _purge_anchors(session: AsyncSession, chain_id: str | None) -> dict[str, AuditPurge]:
    statement = select(AuditPurge).order_by(col(AuditPurge.chain_id), col(AuditPurge.through_seq))
    if chain_id is not None:
        statement = statement.where(col(AuditPurge.chain_id) == chain_id)
    return {purge.chain_id: purge for purge in (await session.exec(statement)).all()}


def _start_walk(
    chain_id: str, pins: Pins, anchors: Mapping[str, AuditPurge], report: VerifyReport
) -> _ChainWalk:
    """A walk from the genesis, or from the last purge if a checkpoint vouches for it."""
    chain_pins = pins.get(chain_id, {})
    anchor = anchors.get(chain_id)
    if anchor is None:
        return _ChainWalk(chain_id, chain_pins)
    report.purges.append(anchor)
    if chain_pins.get(anchor.through_seq) != anchor.through_hash:
        report.problems.append(
            Problem(
                chain_id,
                anchor.through_seq,
                ProblemKind.PURGE_UNANCHORED,
                f"rows up to seq {anchor.through_seq} were removed as purged, but no valid "
                f"checkpoint pins hash {anchor.through_hash} there",
            )
        )
    later_pins = {seq: pin for seq, pin in chain_pins.items() if seq > anchor.through_seq}
    return _ChainWalk(chain_id, later_pins, anchor.through_seq, anchor.through_hash)


async def verify(
    session: AsyncSession, chain_id: str | None = None, *, pins: Pins | None = None
) -> VerifyReport:
    """Walk every chain (or one) in order and report each break with its chain and seq.

    ``pins`` are head hashes from signed checkpoints: a row that disagrees with one, or a
    chain that ends before one, is reported even when the rows and head agree with each
    other (a superuser rewrote or cut the chain and fixed up the hashes).

    Each row comes with its chain's head from the same statement, so rows and heads are one
    snapshot at any isolation level and an append racing the walk is never taken for
    tampering. Rows are streamed as plain rows, not ORM objects, so memory stays flat
    however long the chains are.
    """
    pins = {
        chain: chain_pins
        for chain, chain_pins in (pins or {}).items()
        if chain_id is None or chain == chain_id
    }
    anchors = await _purge_anchors(session, chain_id)
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
    head: tuple[int, str] | None = None
    stream = await session.stream(rows_query.execution_options(yield_per=500))
    async for row in stream.mappings():
        if walk is None or row["chain_id"] != walk.chain_id:
            if walk is not None:
                report.problems.extend(_check_head(walk, head))
            walk = _start_walk(row["chain_id"], pins, anchors, report)
            walked.add(walk.chain_id)
            head = None if row["head_seq"] is None else (row["head_seq"], row["head_hash"])
            report.chains += 1
        report.problems.extend(_check_row(walk, row))
        report.checked += 1
    if walk is not None:
        report.problems.extend(_check_head(walk, head))
    for orphan in (await session.exec(orphan_heads_query)).all():
        # Already judged by its rows; found here only if they vanished after that snapshot.
        if orphan.chain_id in walked:
            continue
        walked.add(orphan.chain_id)
        report.chains += 1
        empty = _start_walk(orphan.chain_id, pins, anchors, report)
        report.problems.extend(_check_head(empty, (orphan.seq, orphan.hash)))
    for lost in sorted(set(pins) - walked):
        # Neither rows nor head left, but checkpoints vouch for the chain.
        report.chains += 1
        report.problems.extend(_check_pinned_tail(_start_walk(lost, pins, anchors, report)))
    return report


async def verify_store(
    session: AsyncSession,
    settings: Settings,
    audit: AuditSettings,
    *,
    chain_id: str | None = None,
    checkpoint_dirs: Sequence[Path] = (),
) -> VerifyReport:
    """Check every checkpoint's signature and links, then walk the chains against them.

    The database's copies are always read; each directory adds the files found there (the
    write-once copies, or an export of them). A checkpoint anyone could delete from the
    database still counts if its file is given.
    """
    found = await checkpoints.read_database(session)
    file_problems = []
    for directory in checkpoint_dirs:
        from_files, unreadable = checkpoints.read_directory(directory)
        found += from_files
        file_problems += unreadable
    if chain_id is not None:
        found = [checkpoint for checkpoint in found if checkpoint.chain_id == chain_id]
    validated = checkpoints.validate(found, signing_keys.trusted_keys(settings, audit))
    report = await verify(session, chain_id, pins=validated.pins)
    report.problems = [
        *(p for p in file_problems if chain_id is None or p.chain_id == chain_id),
        *validated.problems,
        *report.problems,
    ]
    report.checkpoints = validated.count
    report.pending = await pending_count(session)
    return report
