"""Appending: prepared entries chained in batches.

``append_entries`` locks the chains' heads, skips what is already recorded, fills in what a
share's earlier records say, numbers and hashes the rest and writes them (COPY on
PostgreSQL). It works through a session the caller owns, so the sealer's batch commits with
the removal of the staged events it chained. ``append_rows`` is the same for entries as
record rows (``Entry.as_row``, ``staged_row``): the sealer's, which decodes a staged entry
once, straight into the row that is completed, hashed and written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Final

from blume_contracts.audit_entry import Entry
from sqlalchemy import (
    ARRAY,
    BigInteger,
    ColumnElement,
    Executable,
    Result,
    String,
    Table,
    any_,
    bindparam,
    func,
    insert,
    literal,
    text,
    update,
)
from sqlalchemy import select as sql_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_audit_sink.hashing import CURRENT_HASH_VERSION, RECORD_COLUMNS, new_row_hash
from blume_audit_sink.models import GENESIS_HASH, AuditChainHead, AuditRecord

_RECORDS: Final[Table] = AuditRecord.__table__  # type: ignore[attr-defined]
_HEADS: Final[Table] = AuditChainHead.__table__  # type: ignore[attr-defined]

# Below this many rows a plain INSERT costs less than setting up COPY.
_COPY_THRESHOLD: Final = 32

# Built once, so SQLAlchemy compiles each once. On PostgreSQL a list travels as one array.
_CHAIN_IDS: Final = bindparam("chain_ids", type_=ARRAY(String))
_CREATE_HEADS: Final = (
    postgresql.insert(_HEADS)
    .from_select(
        ["chain_id", "seq", "hash"],
        sql_select(
            # Sorted in byte order, as the heads are locked below: two sealers creating the
            # same new heads take their index locks in one order and never deadlock.
            func.unnest(_CHAIN_IDS).collate("C").label("chain_id"),
            literal(0, BigInteger),
            literal(GENESIS_HASH, String),
        ).order_by(text("1")),
    )
    .on_conflict_do_nothing(index_elements=["chain_id"])
)
_LOCK_HEADS: Final = (
    sql_select(_HEADS.c.chain_id, _HEADS.c.seq, _HEADS.c.hash)
    .where(_HEADS.c.chain_id == any_(_CHAIN_IDS))
    # The rows are locked as they come out of the sort: in byte order, as Python sorts.
    .order_by(_HEADS.c.chain_id.collate("C"))
    .with_for_update()
)
_MOVED: Final = sql_select(
    func.unnest(bindparam("chain_ids", type_=ARRAY(String))).label("chain_id"),
    func.unnest(bindparam("seqs", type_=ARRAY(BigInteger))).label("seq"),
    func.unnest(bindparam("hashes", type_=ARRAY(String))).label("hash"),
).subquery("moved")
_MOVE_HEADS: Final = (
    update(_HEADS)
    .where(_HEADS.c.chain_id == _MOVED.c.chain_id)
    .values(seq=_MOVED.c.seq, hash=_MOVED.c.hash)
)
_CREATE_HEAD_SQLITE: Final = (
    sqlite.insert(_HEADS)
    .values(chain_id=bindparam("chain_id"), seq=0, hash=GENESIS_HASH)
    .on_conflict_do_nothing(index_elements=["chain_id"])
)
_READ_HEADS_SQLITE: Final = sql_select(_HEADS.c.chain_id, _HEADS.c.seq, _HEADS.c.hash).where(
    _HEADS.c.chain_id.in_(bindparam("chain_ids", expanding=True))
)
_MOVE_HEAD_SQLITE: Final = (
    update(_HEADS)
    .where(_HEADS.c.chain_id == bindparam("b_chain_id"))
    .values(seq=bindparam("b_seq"), hash=bindparam("b_hash"))
)


async def _run(
    session: AsyncSession,
    statement: Executable,
    parameters: Mapping[str, Any] | list[dict[str, Any]] | None = None,
) -> Result[Any]:
    """A Core statement on the session's connection (SQLModel's ``exec`` types ORM selects)."""
    return await (await session.connection()).execute(statement, parameters)


async def _lock_heads(session: AsyncSession, chain_ids: list[str]) -> dict[str, tuple[int, str]]:
    """Lock the heads of these chains, creating the missing ones; their (seq, hash).

    Two statements whatever the number of chains. Heads are created, then locked, in one
    order (byte order, as Python sorts): two sealers wait for each other in that order and
    never deadlock. Two first events of a tenant may race to create its chain: the loser's
    insert waits for the winner's commit and then does nothing.
    """
    ordered = sorted(chain_ids)
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        await _run(session, _CREATE_HEADS, {"chain_ids": ordered})
        statement = _LOCK_HEADS
    else:  # SQLite writes one transaction at a time: there is no order to keep
        await _run(session, _CREATE_HEAD_SQLITE, [{"chain_id": c} for c in ordered])
        statement = _READ_HEADS_SQLITE
    heads = {
        row.chain_id: (row.seq, row.hash)
        for row in await _run(session, statement, {"chain_ids": ordered})
    }
    if len(heads) != len(ordered):  # only if someone deletes a head between the statements
        raise RuntimeError(f"audit chain heads vanished: {sorted(set(ordered) - set(heads))}")
    return heads


def _one_of(
    session: AsyncSession, column: ColumnElement[str], values: list[str]
) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL one array parameter, not one parameter per value,
    which for a batch of thousands costs more to bind than the lookup itself."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(String)))
    return column.in_(values)


async def _already_recorded(
    session: AsyncSession, rows: Sequence[Mapping[str, Any]]
) -> set[tuple[str, str]]:
    """The (source, id) pairs of ``rows`` already in the store.

    Asked per source with ``event_id IN (...)``: each id is one probe of the unique
    (event_id, event_source) index, however large the table grows.
    """
    by_source: dict[str, list[str]] = {}
    for row in rows:
        by_source.setdefault(row["event_source"], []).append(row["event_id"])
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

ShareKey = tuple[str, str]
"""A share within its chain: (chain id, share id)."""


async def _inherit_share_context(
    session: AsyncSession, fresh_by_chain: Mapping[str, Sequence[dict[str, Any]]]
) -> None:
    """Fill each entry's patient, study, sender and recipient from its share's earlier records.

    Later events of a share (accepted, completed, an access) do not repeat the MRN or the
    people; copying them from the share's first record that has them lets a query by
    patient or recipient find the whole trail. The event's own data always wins. One query
    for the whole batch, whatever the number of chains.
    """
    wanting: set[ShareKey] = set()
    for chain_id, rows in fresh_by_chain.items():
        # A share's request is its first record: in this batch, nothing earlier exists.
        requested_here = {
            row["share_id"] for row in rows if row["event_type"] == "study.send.requested"
        }
        wanting.update(
            (chain_id, row["share_id"])
            for row in rows
            if row["share_id"]
            and row["share_id"] not in requested_here
            and any(row[name] is None for name in _SHARE_CONTEXT)
        )
    known = await _earlier_share_context(session, wanting) if wanting else {}
    for chain_id, rows in fresh_by_chain.items():
        for row in rows:
            if row["share_id"] is None:
                continue
            context = known.setdefault((chain_id, row["share_id"]), {})
            for name in _SHARE_CONTEXT:
                if row[name] is None and name in context:
                    row[name] = context[name]
            _remember(context, row)


async def _earlier_share_context(
    session: AsyncSession, shares: set[ShareKey]
) -> dict[ShareKey, dict[str, str]]:
    """What the stored records of these shares say, the first value of each field winning."""
    # By share id alone: the planner then walks the share_id index only, never a whole
    # chain; a share id another tenant happens to use is filtered out here.
    statement = sql_select(
        _RECORDS.c.chain_id,
        _RECORDS.c.seq,
        _RECORDS.c.share_id,
        *(_RECORDS.c[name] for name in _SHARE_CONTEXT),
    ).where(_one_of(session, _RECORDS.c.share_id, sorted({share for _, share in shares})))
    rows = [
        row
        for row in (await _run(session, statement)).mappings()
        if (row["chain_id"], row["share_id"]) in shares
    ]
    known: dict[ShareKey, dict[str, str]] = {}
    for row in sorted(rows, key=lambda found: found["seq"]):
        _remember(known.setdefault((row["chain_id"], row["share_id"]), {}), dict(row))
    return known


def _remember(context: dict[str, str], values: Mapping[str, Any]) -> None:
    for name in _SHARE_CONTEXT:
        if name not in context and values[name] is not None:
            context[name] = values[name]


_COPY_RECORDS: Final = (
    f"COPY audit_records ({', '.join(RECORD_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
)
_NOT_TEXT: Final = {
    "seq": "int8",
    "hash_version": "int2",
    "occurred_at": "timestamptz",
    "recorded_at": "timestamptz",
}
COPY_TYPES: Final = tuple(_NOT_TEXT.get(name, "text") for name in RECORD_COLUMNS)
"""What binary COPY sends each column as: its own type (the server reads the bytes as that)."""
_AS_COPY_ROW: Final = itemgetter(*RECORD_COLUMNS)


async def _insert_rows(session: AsyncSession, rows: Iterable[dict[str, Any]], count: int) -> None:
    """Write ``count`` rows with COPY on PostgreSQL (in this transaction), INSERT otherwise.

    Binary COPY: the driver formats a row several times faster than as text, and nothing
    needs escaping. ``rows`` may be a generator: on COPY each row goes out as it is made,
    so the server stores the first rows while the rest are still being hashed.
    """
    connection = await session.connection()
    if connection.dialect.name != "postgresql" or count < _COPY_THRESHOLD:
        await connection.execute(insert(_RECORDS), list(rows))
        return
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    async with driver.cursor() as cursor, cursor.copy(_COPY_RECORDS) as copy:
        copy.set_types(COPY_TYPES)
        for row in rows:
            await copy.write_row(_AS_COPY_ROW(row))


async def _move_heads(session: AsyncSession, new_heads: Mapping[str, tuple[int, str]]) -> None:
    """Move every head that advanced, in one statement on PostgreSQL."""
    if session.get_bind().dialect.name == "postgresql":
        chain_ids = list(new_heads)
        await _run(
            session,
            _MOVE_HEADS,
            {
                "chain_ids": chain_ids,
                "seqs": [new_heads[chain_id][0] for chain_id in chain_ids],
                "hashes": [new_heads[chain_id][1] for chain_id in chain_ids],
            },
        )
        return
    await _run(
        session,
        _MOVE_HEAD_SQLITE,
        [
            {"b_chain_id": chain_id, "b_seq": seq, "b_hash": last_hash}
            for chain_id, (seq, last_hash) in new_heads.items()
        ],
    )


async def append_entries(
    session: AsyncSession,
    entries: Sequence[Entry],
    *,
    recorded: set[tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Append prepared entries to their chains in one go; returns the rows written.

    Entries already recorded (same source and id) are skipped. Heads are locked in chain
    order before the duplicate check, so concurrent sealers never deadlock and a concurrent
    append of the same event is seen once it commits. ``recorded``: the (source, id) of the
    entries the caller found in the store in this transaction, when nothing else can append
    them meanwhile (the sealer asks as it takes its batch); None asks here.
    """
    return await append_rows(session, [entry.as_row() for entry in entries], recorded=recorded)


async def append_rows(
    session: AsyncSession,
    rows: Sequence[dict[str, Any]],
    *,
    recorded: set[tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """``append_entries`` for entries as rows, which are completed in place (sequence
    number, hash version, the share's inherited context, the link and the hash) and
    returned, those written only."""
    by_chain: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_chain.setdefault(row["chain_id"], []).append(row)
    if not by_chain:
        return []
    heads = await _lock_heads(session, list(by_chain))
    if recorded is None:
        recorded = await _already_recorded(session, rows)
    fresh_by_chain = {
        chain_id: fresh
        for chain_id, chain_rows in by_chain.items()
        if (fresh := _first_of_each(chain_rows, recorded))
    }
    if not fresh_by_chain:
        return []
    await _inherit_share_context(session, fresh_by_chain)
    written: list[dict[str, Any]] = []
    new_heads: dict[str, tuple[int, str]] = {}

    def chained() -> Iterator[dict[str, Any]]:
        for chain_id, fresh in fresh_by_chain.items():
            seq, last_hash = heads[chain_id]
            for row in fresh:
                seq += 1
                row["seq"] = seq
                row["hash_version"] = CURRENT_HASH_VERSION
                row["prev_hash"] = last_hash
                row["hash"] = last_hash = new_row_hash(row)
                written.append(row)
                yield row
            new_heads[chain_id] = (seq, last_hash)

    await _insert_rows(session, chained(), sum(map(len, fresh_by_chain.values())))
    # After the rows: the database lets a head move only onto a record that exists.
    await _move_heads(session, new_heads)
    return written


def _first_of_each(
    rows: Iterable[dict[str, Any]], recorded: set[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Rows not yet recorded, each (source, id) once, in the order given."""
    seen = set(recorded)
    fresh = []
    for row in rows:
        key = (row["event_source"], row["event_id"])
        if key not in seen:
            seen.add(key)
            fresh.append(row)
    return fresh
