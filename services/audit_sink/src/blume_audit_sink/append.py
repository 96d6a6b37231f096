"""Appending: prepared entries chained in batches.

``append_entries`` locks the chains' heads, skips what is already recorded, fills in what a
share's earlier records say, numbers and hashes the rest and writes them (COPY on
PostgreSQL). It works through a session the caller owns, so the sealer's batch commits with
the removal of the staged events it chained.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Final

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Executable,
    Result,
    String,
    Table,
    any_,
    bindparam,
    insert,
    update,
)
from sqlalchemy import select as sql_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_audit_sink.entry import Entry
from blume_audit_sink.hashing import CURRENT_HASH_VERSION, RECORD_COLUMNS, new_row_hash
from blume_audit_sink.models import GENESIS_HASH, AuditChainHead, AuditRecord

_RECORDS: Final[Table] = AuditRecord.__table__  # type: ignore[attr-defined]
_HEADS: Final[Table] = AuditChainHead.__table__  # type: ignore[attr-defined]

# Below this many rows a plain INSERT costs less than setting up COPY.
_COPY_THRESHOLD: Final = 32


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


def _row_for(entry: Entry, seq: int, prev_hash: str) -> dict[str, Any]:
    """The row for ``entry`` at ``seq``, hashed."""
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
    row["hash"] = new_row_hash(row)
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
