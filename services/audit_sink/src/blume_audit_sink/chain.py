"""The hash chain: prepare an event, append in batches, verify the chains, query the records.

Everything here works through a session the caller owns, so the sealer's batch commits
with the removal of the staged events it chained, and the CLI's ``audit verify`` and
``audit query`` run the same code on PostgreSQL or on the embedded SQLite file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from operator import itemgetter
from typing import Any, Final

from blume_contracts.envelope import RawEvent
from blume_contracts.registry import SENSITIVE_FIELDS, protect_for_audit
from blume_contracts.sensitivity import Sensitivity
from blume_runtime.db import as_utc, utcnow
from pydantic_core import to_jsonable_python
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Executable,
    Result,
    String,
    Table,
    any_,
    bindparam,
    exists,
    insert,
    update,
)
from sqlalchemy import select as sql_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_audit_sink import catalog
from blume_audit_sink.models import (
    GENESIS_HASH,
    AuditChainHead,
    AuditPurge,
    AuditRecord,
)

HASHED_COLUMNS_V1: Final = (
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
HASHED_COLUMNS: Final = (
    *HASHED_COLUMNS_V1,
    "hash_version",
    "event_code",
    "action",
    "outcome",
    "patient_mrn",
    "sender_user_id",
    "recipient_email",
    "agents",
)
CURRENT_HASH_VERSION: Final = 2
HASHED_COLUMNS_BY_VERSION: Final[Mapping[int, tuple[str, ...]]] = {
    1: HASHED_COLUMNS_V1,
    2: HASHED_COLUMNS,
}
"""Version 1 rows were written before migration 0002 and keep verifying as they were."""

RECORD_COLUMNS: Final = (*HASHED_COLUMNS, "prev_hash", "hash")

_RECORDS: Final[Table] = AuditRecord.__table__  # type: ignore[attr-defined]
_HEADS: Final[Table] = AuditChainHead.__table__  # type: ignore[attr-defined]

# Values copied into the indexed columns. Anything else (data that broke its contract can
# hold any JSON) stays in the payload only, so a bad value can never fail the insert.
_INDEXABLE = re.compile(r"^[\x21-\x7e]{1,256}$")

# Below this many rows a plain INSERT costs less than setting up COPY.
_COPY_THRESHOLD: Final = 32


def canonical_json(obj: Any) -> str:
    """The one JSON spelling of ``obj``: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) over the previous record's hash and this record's hashed columns."""
    return hashlib.sha256(f"{prev_hash}\n{canonical_json(fields)}".encode()).hexdigest()


def hashed_fields(values: Mapping[Any, Any]) -> dict[str, Any]:
    """The hashed columns of a record (or a row's mapping), timestamps as UTC ISO 8601.

    Which columns depends on the row's ``hash_version``. SQLite hands timestamps back naive
    and PostgreSQL in the session's time zone; both must hash as they did when appended.
    """
    version = values.get("hash_version", CURRENT_HASH_VERSION)
    names = HASHED_COLUMNS_BY_VERSION.get(version, HASHED_COLUMNS)
    fields = {name: values[name] for name in names}
    for name in ("occurred_at", "recorded_at"):
        stamp = fields[name]
        # An export gives ISO 8601 text; it hashes as the timestamp it names.
        moment = datetime.fromisoformat(stamp) if isinstance(stamp, str) else stamp
        fields[name] = as_utc(moment).isoformat()
    return fields


def _indexable(value: Any) -> str | None:
    return value if isinstance(value, str) and _INDEXABLE.match(value) else None


def _study_uid(data: Any) -> str | None:
    """``data.study.study_instance_uid`` (a send request) or ``data.study_instance_uid``."""
    if not isinstance(data, dict):
        return None
    study = data.get("study")
    if isinstance(study, dict) and "study_instance_uid" in study:
        return _indexable(study["study_instance_uid"])
    return _indexable(data.get("study_instance_uid"))


def requested_share_id(source: str, event_id: str) -> str:
    """The id the dispatcher gives the share a ``study.send.requested`` creates.

    The dispatcher derives it from the request's dedupe key (``share_id_for``); recording it
    on the request itself gives a share's whole trail one key, so its first record holds the
    patient and study. A test pins this to the dispatcher's function.
    """
    digest = hashlib.sha256(f"{source}\n{event_id}".encode()).hexdigest()
    return f"shr_{digest[:32]}"


def _share_id(event: RawEvent, data: Any) -> str | None:
    if event.type == "study.send.requested":
        return requested_share_id(event.source, event.id)
    return _indexable(data.get("share_id")) if isinstance(data, dict) else None


@dataclass(slots=True)
class Entry:
    """An event made ready for the chain: secrets fingerprinted, classified, keys extracted.

    Staged as JSON until the sealer appends it; ``seq`` and the hashes come at append time.
    """

    chain_id: str
    event_id: str
    event_source: str
    event_type: str
    occurred_at: datetime
    recorded_at: datetime
    share_id: str | None
    correlation_id: str
    study_uid: str | None
    payload: str
    event_code: str
    action: str
    outcome: str
    patient_mrn: str | None
    sender_user_id: str | None
    recipient_email: str | None
    agents: str

    def to_json(self) -> str:
        values = {name: getattr(self, name) for name in self.__slots__}
        values["occurred_at"] = self.occurred_at.isoformat()
        values["recorded_at"] = self.recorded_at.isoformat()
        return json.dumps(values, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Entry:
        values = json.loads(text)
        values["occurred_at"] = datetime.fromisoformat(values["occurred_at"])
        values["recorded_at"] = datetime.fromisoformat(values["recorded_at"])
        return cls(**values)


_SECRET_KEYS: Final = tuple(
    f'"{name}":' for name, marking in SENSITIVE_FIELDS.items() if marking is Sensitivity.SECRET
)


def _protected(data: Any) -> tuple[Any, str]:
    """The data with secrets fingerprinted, and its canonical JSON.

    Most events carry no secret at all: when no secret field's name appears as a key in
    the JSON text, fingerprinting would change nothing and the walk through the data is
    skipped.
    """
    text = canonical_json(data)
    if not any(key in text for key in _SECRET_KEYS):
        return data, text
    protected = protect_for_audit(data)
    return protected, canonical_json(protected)


def prepare(
    event: RawEvent, *, received_at: datetime | None = None, broker_user: str | None = None
) -> Entry:
    """``event`` as the audit store keeps it; nothing secret survives this step.

    ``broker_user`` is the verified publisher of an outside request (the requester).
    """
    data, payload = _protected(to_jsonable_python(event.data))
    kind = catalog.classify(event.type)
    agents = catalog.agents_of(data, broker_user)
    return Entry(
        chain_id=event.tenantid,
        event_id=event.id,
        event_source=event.source,
        event_type=event.type,
        # SQLite drops the offset when it stores a timestamp: store UTC so it reads back equal.
        occurred_at=as_utc(event.time),
        recorded_at=received_at or utcnow(),
        share_id=_share_id(event, data),
        correlation_id=event.correlationid,
        study_uid=_study_uid(data),
        payload=payload,
        event_code=kind.code.token,
        action=kind.action.value,
        outcome=kind.outcome.value,
        patient_mrn=_indexable(catalog.patient_mrn_of(data)),
        sender_user_id=_indexable(catalog.role_of(agents, "sender").get("user_id")),
        recipient_email=_indexable(catalog.recipient_email_of(agents)),
        agents=canonical_json(agents),
    )


# ------------------------------------------------------------------------------ appending


async def _run(session: AsyncSession, statement: Executable) -> Result[Any]:
    """A Core statement on the session's connection (SQLModel's ``exec`` types ORM selects)."""
    return await (await session.connection()).execute(statement)


async def _lock_head(session: AsyncSession, chain_id: str) -> tuple[int, str] | None:
    statement = (
        sql_select(_HEADS.c.seq, _HEADS.c.hash)
        .where(_HEADS.c.chain_id == chain_id)
        .with_for_update()
    )
    found = (await _run(session, statement)).first()
    return None if found is None else (found.seq, found.hash)


async def _lock_or_create_head(session: AsyncSession, chain_id: str) -> tuple[int, str]:
    head = await _lock_head(session, chain_id)
    if head is not None:
        return head
    # Two first events of a tenant may race to create its chain: the loser's insert does
    # nothing, and its lock then waits for the winner's commit instead of failing.
    dialect = session.get_bind().dialect.name
    insert_head = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.exec(
        insert_head(_HEADS)
        .values(chain_id=chain_id, seq=0, hash=GENESIS_HASH)
        .on_conflict_do_nothing(index_elements=["chain_id"])
    )
    head = await _lock_head(session, chain_id)
    if head is None:  # only if someone deletes the head between our two statements
        raise RuntimeError(f"audit chain head for {chain_id!r} vanished")
    return head


def _one_of(
    session: AsyncSession, column: ColumnElement[str], values: list[str]
) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL one array parameter, not one parameter per value,
    which for a batch of thousands costs more to bind than the lookup itself."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(String)))
    return column.in_(values)


async def _already_recorded(
    session: AsyncSession, entries: Sequence[Entry]
) -> set[tuple[str, str]]:
    """The (source, id) pairs of ``entries`` already in the store.

    Asked per source with ``event_id IN (...)``: each id is one probe of the unique
    (event_id, event_source) index, however large the table grows.
    """
    by_source: dict[str, list[str]] = {}
    for entry in entries:
        by_source.setdefault(entry.event_source, []).append(entry.event_id)
    found: set[tuple[str, str]] = set()
    for source, ids in by_source.items():
        for start in range(0, len(ids), 1000):
            statement = sql_select(_RECORDS.c.event_id).where(
                _RECORDS.c.event_source == source,
                _one_of(session, _RECORDS.c.event_id, ids[start : start + 1000]),
            )
            found.update((source, row.event_id) for row in await _run(session, statement))
    return found


_SHARE_CONTEXT: Final = ("patient_mrn", "study_uid", "sender_user_id", "recipient_email")
"""What a share's later events inherit from its earlier records when their data lacks it."""


async def _inherit_share_context(
    session: AsyncSession, chain_id: str, entries: Sequence[Entry]
) -> None:
    """Fill each entry's patient, study, sender and recipient from its share's earlier records.

    Later events of a share (accepted, completed, an access) do not repeat the MRN or the
    people; copying them from the share's first record that has them lets a query by
    patient or recipient find the whole trail. The event's own data always wins.
    """
    # A share's request is its first record: if it is in this batch, nothing earlier exists.
    requested_here = {e.share_id for e in entries if e.event_type == "study.send.requested"}
    wanting = {
        entry.share_id
        for entry in entries
        if entry.share_id
        and entry.share_id not in requested_here
        and any(getattr(entry, name) is None for name in _SHARE_CONTEXT)
    }
    known = await _earlier_share_context(session, chain_id, wanting) if wanting else {}
    for entry in entries:
        if entry.share_id is None:
            continue
        context = known.setdefault(entry.share_id, {})
        for name in _SHARE_CONTEXT:
            if getattr(entry, name) is None and name in context:
                setattr(entry, name, context[name])
        _remember(context, {name: getattr(entry, name) for name in _SHARE_CONTEXT})


async def _earlier_share_context(
    session: AsyncSession, chain_id: str, share_ids: set[str]
) -> dict[str, dict[str, str]]:
    """What the stored records of these shares say, the first value of each field winning."""
    # By share id alone: the planner then walks the share_id index only, never the whole
    # chain; a share id another tenant happens to use is filtered out here.
    statement = sql_select(
        _RECORDS.c.chain_id,
        _RECORDS.c.seq,
        _RECORDS.c.share_id,
        *(_RECORDS.c[name] for name in _SHARE_CONTEXT),
    ).where(_one_of(session, _RECORDS.c.share_id, sorted(share_ids)))
    rows = [
        row for row in (await _run(session, statement)).mappings() if row["chain_id"] == chain_id
    ]
    known: dict[str, dict[str, str]] = {}
    for row in sorted(rows, key=lambda found: found["seq"]):
        _remember(known.setdefault(row["share_id"], {}), dict(row))
    return known


def _remember(context: dict[str, str], values: Mapping[str, Any]) -> None:
    for name in _SHARE_CONTEXT:
        if name not in context and values[name] is not None:
            context[name] = values[name]


_SORTED_HASHED_COLUMNS: Final = tuple(sorted(HASHED_COLUMNS))
_ENCODE_IN_ORDER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _row_for(entry: Entry, seq: int, prev_hash: str) -> dict[str, Any]:
    """The row for ``entry`` at ``seq``, hashed.

    The hot path of a batch: the hashed fields are laid out in sorted order and encoded
    without sorting, which is byte for byte ``canonical_json(hashed_fields(row))`` (the
    tests and every verify hold it to that).
    """
    row: dict[str, Any] = {
        "chain_id": entry.chain_id,
        "seq": seq,
        "event_id": entry.event_id,
        "event_source": entry.event_source,
        "event_type": entry.event_type,
        "occurred_at": entry.occurred_at,
        "recorded_at": entry.recorded_at,
        "share_id": entry.share_id,
        "correlation_id": entry.correlation_id,
        "study_uid": entry.study_uid,
        "payload": entry.payload,
        "hash_version": CURRENT_HASH_VERSION,
        "event_code": entry.event_code,
        "action": entry.action,
        "outcome": entry.outcome,
        "patient_mrn": entry.patient_mrn,
        "sender_user_id": entry.sender_user_id,
        "recipient_email": entry.recipient_email,
        "agents": entry.agents,
        "prev_hash": prev_hash,
    }
    fields = {name: row[name] for name in _SORTED_HASHED_COLUMNS}
    fields["occurred_at"] = as_utc(entry.occurred_at).isoformat()
    fields["recorded_at"] = as_utc(entry.recorded_at).isoformat()
    text = f"{prev_hash}\n{_ENCODE_IN_ORDER(fields)}"
    row["hash"] = hashlib.sha256(text.encode()).hexdigest()
    return row


async def _insert_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Write rows with COPY on PostgreSQL (in this transaction), a multi-row INSERT otherwise."""
    connection = await session.connection()
    if connection.dialect.name != "postgresql" or len(rows) < _COPY_THRESHOLD:
        await session.exec(insert(_RECORDS), params=rows)
        return
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    columns = ", ".join(RECORD_COLUMNS)
    copy_sql = f"COPY audit_records ({columns}) FROM STDIN"
    as_tuple = itemgetter(*RECORD_COLUMNS)
    async with driver.cursor() as cursor, cursor.copy(copy_sql) as copy:
        for row in rows:
            await copy.write_row(as_tuple(row))


async def append_entries(session: AsyncSession, entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """Append prepared entries to their chains in one go; returns the rows written.

    Entries already recorded (same source and id) are skipped. Heads are locked in chain
    order before the duplicate check, so concurrent sealers never deadlock and a concurrent
    append of the same event is seen once it commits.
    """
    by_chain: dict[str, list[Entry]] = {}
    for entry in entries:
        by_chain.setdefault(entry.chain_id, []).append(entry)
    heads = {
        chain_id: await _lock_or_create_head(session, chain_id) for chain_id in sorted(by_chain)
    }
    recorded = await _already_recorded(session, entries)
    rows: list[dict[str, Any]] = []
    new_heads: dict[str, tuple[int, str]] = {}
    for chain_id, chain_entries in by_chain.items():
        fresh = _first_of_each(chain_entries, recorded)
        if not fresh:
            continue
        await _inherit_share_context(session, chain_id, fresh)
        seq, last_hash = heads[chain_id]
        for entry in fresh:
            seq += 1
            row = _row_for(entry, seq, last_hash)
            last_hash = row["hash"]
            rows.append(row)
        new_heads[chain_id] = (seq, last_hash)
    if not rows:
        return []
    await _insert_rows(session, rows)
    # After the rows: the database lets a head move only onto a record that exists.
    for chain_id, (seq, last_hash) in new_heads.items():
        await session.exec(
            update(_HEADS).where(_HEADS.c.chain_id == chain_id).values(seq=seq, hash=last_hash)
        )
    return rows


def _first_of_each(entries: Iterable[Entry], recorded: set[tuple[str, str]]) -> list[Entry]:
    """Entries not yet recorded, each (source, id) once, in the order given."""
    seen = set(recorded)
    fresh = []
    for entry in entries:
        key = (entry.event_source, entry.event_id)
        if key not in seen:
            seen.add(key)
            fresh.append(entry)
    return fresh


async def append(session: AsyncSession, event: RawEvent) -> AuditRecord | None:
    """Append one event to its tenant's chain now; None if (source, id) is already recorded."""
    rows = await append_entries(session, [prepare(event)])
    return AuditRecord(**rows[0]) if rows else None


# ------------------------------------------------------------------------------ verifying


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
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"
    """A signed checkpoint pins another hash at this seq: the rows up to it were rewritten."""
    TRUNCATED = "truncated"
    """A signed checkpoint vouches for rows that are gone: the tail was cut off."""
    CHECKPOINT_INVALID = "checkpoint_invalid"
    """A checkpoint's signature, key or link to the previous checkpoint does not hold."""
    PURGE_UNANCHORED = "purge_unanchored"
    """Rows were removed as purged, but no valid checkpoint vouches for where they ended."""


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


# ------------------------------------------------------------------------------- querying


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
    """``find`` with keyword filters (the original query interface, kept for its callers)."""
    wanted = RecordFilter(
        tenant_id=tenant_id,
        share_id=share_id,
        study_uid=study_uid,
        correlation_id=correlation_id,
        event_type=event_type,
        since=since,
        until=until,
    )
    return await find(session, wanted, limit=limit, offset=offset)


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
