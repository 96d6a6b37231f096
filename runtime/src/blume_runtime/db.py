"""Database access: one async engine per process, SQLModel tables, inbox and outbox.

PostgreSQL (psycopg 3) in production, SQLite (aiosqlite) on the embedded default.

On PostgreSQL every service's tables live in a schema of their own, named after the service
(``share_dispatcher``, ``access_gateway``, ...), its inbox and outbox included. The models
name no schema: a service's ``Database`` maps "no schema" to the service's own
(``schema_translate_map``), so the one ``InboxEntry``/``OutboxMessage`` definition serves
every service, and a service can only name its own tables. SQLite has no schemas: there
every table stays in the one file and nothing is translated.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final, cast

import psycopg
from blume_contracts.audit_entry import AUDIT_SCHEMA, AUDIT_STAGING_TABLE
from psycopg import sql
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Dialect,
    Executable,
    Insert,
    MetaData,
    Table,
    TypeDecorator,
    event,
    insert,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_runtime import metrics
from blume_runtime.statements import CompiledStatement, compile_statement
from blume_runtime.tracing import span


def utcnow() -> datetime:
    return datetime.now(UTC)


# pydantic asks for a default factory's signature (``inspect.signature``) each time it calls
# it, for every timestamp a table row leaves to its default; given here, it is read at once.
utcnow.__signature__ = inspect.signature(utcnow)  # type: ignore[attr-defined]


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Stored as UTC, returned aware: SQLite keeps no zone and would shift non-UTC values."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, _dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: store aware datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, _dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def timestamp_column(*, nullable: bool = False, index: bool = False) -> Any:
    """A timezone-aware timestamp column (``now`` by default unless nullable)."""
    if nullable:
        return Field(default=None, sa_type=UtcDateTime, nullable=True, index=index)
    return Field(default_factory=utcnow, sa_type=UtcDateTime, index=index)


def database_url(url: str, *, use_async: bool) -> str:
    """Accept ``postgresql://``, ``postgres://`` and ``sqlite://``; pick the right driver."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite" if use_async else "sqlite")
    else:
        raise ValueError(f"unsupported database {backend!r}: use PostgreSQL or SQLite")
    return parsed.render_as_string(hide_password=False)


class InboxEntry(SQLModel, table=True):
    """A message a consumer has processed, recorded in the same transaction as its effect."""

    __tablename__ = "runtime_inbox"

    consumer: str = Field(primary_key=True, max_length=64)
    event_source: str = Field(primary_key=True, max_length=256)
    event_id: str = Field(primary_key=True, max_length=256)
    processed_at: datetime = timestamp_column()


class OutboxMessage(SQLModel, table=True):
    """An event caused by a committed change, waiting to be published (deleted once confirmed)."""

    __tablename__ = "runtime_outbox"

    event_id: str = Field(primary_key=True, max_length=256)
    routing_key: str = Field(max_length=128)
    body: bytes
    created_at: datetime = timestamp_column(index=True)


POOL_RECYCLE_SECONDS: Final = 300
DEFAULT_POOL_SIZE: Final = 10
POOL_OVERFLOW: Final = 5
"""Connections opened past the pool for a burst, each closed again when given back."""

_INBOX: Final[Table] = InboxEntry.__table__  # type: ignore[attr-defined]
OUTBOX_TABLE: Final[Table] = OutboxMessage.__table__  # type: ignore[attr-defined]
# SQLite: built once, so SQLAlchemy compiles each once (its compiled cache) and runs them
# on Core, with none of the ORM's flush machinery.
_SQLITE_INBOX_CLAIM: Final[Insert] = (
    sqlite.insert(_INBOX)
    .on_conflict_do_nothing()
    .returning(_INBOX.c.event_source, _INBOX.c.event_id)
)
_SQLITE_OUTBOX_INSERT: Final = insert(OUTBOX_TABLE)
# PostgreSQL: the two statements every delivery runs go straight to psycopg, on the
# connection and in the transaction of the session. SQLAlchemy's execution (its cache key,
# execution context, adapted cursor and result) cost more CPU than the round trip itself,
# about 0.25 ms each. Arrays make one statement of any number of rows, so psycopg prepares
# each once per connection whatever the batch size. Failures still go through SQLAlchemy's
# own handling (``_raise_as_sqlalchemy``).
_PG_INBOX_CLAIM: Final = sql.SQL(
    "INSERT INTO {table} (consumer, event_source, event_id, processed_at) {rows}"
    " ON CONFLICT DO NOTHING RETURNING event_source, event_id"
)
_PG_OUTBOX_INSERT: Final = sql.SQL(
    "INSERT INTO {table} (event_id, routing_key, body, created_at) {rows}"
)
# One row (a delivery alone) as plain values: psycopg dumps arrays at several times the CPU
# of scalars. Many rows as arrays, in their given order, sent in binary (``%b``): in text
# an array's every quote and backslash is escaped by a regular expression with a Python
# callback per match, and a JSON entry is full of quotes (8 staged rows: 0.95 ms of CPU in
# text, 0.15 ms in binary).
_ONE_INBOX_ROW: Final = sql.SQL("VALUES (%s, %s, %s, %s)")
_INBOX_ROWS: Final = sql.SQL(
    "SELECT %s, key.source, key.id, %s"
    " FROM unnest(%b::text[], %b::text[]) WITH ORDINALITY AS key(source, id, n) ORDER BY key.n"
)
_ONE_OUTBOX_ROW: Final = sql.SQL("VALUES (%s, %s, %s, %s)")
_OUTBOX_ROWS: Final = sql.SQL(
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::bytea[], %b::timestamptz[])"
)
_OUTBOX_COLUMNS: Final = ("event_id", "routing_key", "body", "created_at")
# The audit rows a transaction stages (``STAGED_AUDIT``) go into the audit schema's staging
# table in the same statement as its outbox rows (a data-modifying WITH), or alone. The
# database fills in ``staged_by`` (migration 0018); a copy staged twice is ignored.
_PG_AUDIT_STAGE: Final = sql.SQL(
    "INSERT INTO {table} (event_source, event_id, received_at, entry) {rows} ON CONFLICT DO NOTHING"
)
_ONE_AUDIT_ROW: Final = sql.SQL("VALUES (%s, %s, %s, %s)")
_AUDIT_ROWS: Final = sql.SQL(
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::text[])"
)
_AUDIT_STAGING: Final = sql.Identifier(AUDIT_SCHEMA, AUDIT_STAGING_TABLE)
_SQLITE_AUDIT_STAGE: Final = insert(
    Table(
        AUDIT_STAGING_TABLE,
        MetaData(),
        Column("event_source"),
        Column("event_id"),
        Column("received_at", UtcDateTime),
        Column("entry"),
    )
).prefix_with("OR IGNORE")
_DATABASE: Final = "blume_database"
"""The ``session.info`` key of the ``Database`` whose transaction the session is in."""
_COMPILED_STATEMENTS_KEPT: Final = 256
"""Past this many, a statement is run through SQLAlchemy: statements built per call (which
do not belong in ``fetch``) must not grow the cache without end."""
_DRIVER: Final = "blume_driver_connection"
"""The ``session.info`` key of (transaction, its connection, its psycopg connection)."""

STAGED_OUTBOX: Final = "blume_staged_outbox"
"""The ``session.info`` key of the outbox rows a ``Database.transaction`` writes at its end."""
STAGED_AUDIT: Final = "blume_staged_audit"
"""The ``session.info`` key of the audit rows (``AuditRow``) a ``Database.transaction`` stages
at its end; present only in the transactions of a database that stages them."""

AuditRow = tuple[str, str, datetime, str]
"""An event staged for the audit store: (source, id, when it was staged, ``Entry`` JSON)."""

_PG_CAN_STAGE: Final = (
    "SELECT coalesce(has_column_privilege("
    f"to_regclass('{AUDIT_SCHEMA}.{AUDIT_STAGING_TABLE}'), 'entry', 'INSERT'), false)"
)
_SQLITE_CAN_STAGE: Final = (
    f"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '{AUDIT_STAGING_TABLE}'"
)


class AuditStagingUnavailableError(RuntimeError):
    """A service's database has no audit staging table it may insert into, and the audit
    sink is not recording copies (``BLUME_AUDIT_COPIES``): its events would go unrecorded."""


_audit_listeners: list[Callable[[], None]] = []


def on_audit_staged(listener: Callable[[], None]) -> Callable[[], None]:
    """Call ``listener`` whenever a transaction of this process that staged audit rows has
    committed (the sealer wakes at once; other processes' staging wakes it by NOTIFY).
    Returns what removes it."""
    _audit_listeners.append(listener)
    return lambda: _audit_listeners.remove(listener)


InboxKey = tuple[str, str]
"""A message's dedupe key in a consumer's inbox: (event source, event id)."""

RUNTIME_TABLES: Final = (InboxEntry, OutboxMessage)
"""The tables every service has in its own schema."""


class Database:
    """An engine and the schema its sessions use.

    ``schema`` (PostgreSQL only) is the service whose tables unqualified names mean; None
    leaves them to the connection's ``search_path`` (the CLI, running as the migrator).
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        echo: bool = False,
        stages_audit: bool | None = False,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        """``pool_size``: the connections kept open (PostgreSQL); a worker process passes
        ``Settings.database_pool_size``, one per transaction it may run at once."""
        self.url = database_url(url, use_async=True)
        self.stages_audit = stages_audit
        """Whether the events emitted in this database's transactions are staged for the
        audit store in them; None: if this login can insert into the audit sink's staging
        table, found out before the first transaction (``resolve_audit_staging``)."""
        self.is_sqlite = self.url.startswith("sqlite")
        self._system = "sqlite" if self.is_sqlite else "postgresql"
        # Query parameters can hold PHI: keep them out of exception messages and logs.
        options: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if not self.is_sqlite:
            # No ping per checkout (a round trip per transaction): a connection that died
            # (PostgreSQL restarted) fails its first statement, SQLAlchemy invalidates the
            # pool, and the failure is retried like any outage (``database_unavailable``).
            # Recycling bounds how long an idle connection can sit behind a NAT or proxy.
            options.update(
                pool_size=pool_size,
                max_overflow=POOL_OVERFLOW,
                pool_pre_ping=False,
                pool_recycle=POOL_RECYCLE_SECONDS,
            )
        self._pool_engine: AsyncEngine = create_async_engine(self.url, **options)
        # Counted so that a change adding a round trip per message shows (bench, tests).
        event.listen(self._pool_engine.sync_engine, "commit", _count_commit)
        event.listen(self._pool_engine.sync_engine, "before_cursor_execute", _count_statement)
        event.listen(self._pool_engine.sync_engine.pool, "checkout", _count_checkout)
        if self.is_sqlite:
            event.listen(self._pool_engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self._pool_engine.sync_engine, "begin", _sqlite_begin_immediate)
        self._owns_pool = True
        self._use(schema)

    def _use(self, schema: str | None) -> None:
        self.schema = None if self.is_sqlite else schema

        def table(name: str) -> sql.Composable:
            return (
                sql.Identifier(name) if self.schema is None else sql.Identifier(self.schema, name)
            )

        inbox, outbox = table(_INBOX.name), table(OUTBOX_TABLE.name)
        self._claim_sql = {
            many: _PG_INBOX_CLAIM.format(table=inbox, rows=rows).as_string()
            for many, rows in ((False, _ONE_INBOX_ROW), (True, _INBOX_ROWS))
        }
        outbox_inserts = {
            count: _PG_OUTBOX_INSERT.format(table=outbox, rows=rows)
            for count, rows in ((1, _ONE_OUTBOX_ROW), (2, _OUTBOX_ROWS))
        }
        audit_inserts = {
            count: _PG_AUDIT_STAGE.format(table=_AUDIT_STAGING, rows=rows)
            for count, rows in ((1, _ONE_AUDIT_ROW), (2, _AUDIT_ROWS))
        }
        # Keyed by (outbox rows, audit rows), each 0, 1 or 2 for "several".
        self._end_sql = {
            (0, audit): audit_insert.as_string() for audit, audit_insert in audit_inserts.items()
        }
        for count, outbox_insert in outbox_inserts.items():
            self._end_sql[(count, 0)] = outbox_insert.as_string()
            for audit, audit_insert in audit_inserts.items():
                self._end_sql[(count, audit)] = (
                    sql.SQL("WITH staged AS ({}) {}").format(audit_insert, outbox_insert)
                ).as_string()
        self._statements: dict[tuple[int, tuple[str, ...]], CompiledStatement] = {}
        self.engine: AsyncEngine = (
            self._pool_engine
            if self.schema is None
            else self._pool_engine.execution_options(schema_translate_map={None: self.schema})
        )
        self._sessions = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False
        )

    def in_schema(self, schema: str) -> Database:
        """The same engine and pool, its unqualified tables in ``schema`` (PostgreSQL), staging
        audit rows if this login can (``stages_audit`` None).

        One process hosting several services on one URL (development) gives each its own
        schema this way without a pool each. On SQLite it is a view of this database that
        differs only in that.
        """
        if schema == self.schema and self.stages_audit is None:
            return self
        view = copy.copy(self)
        view._owns_pool = False
        view.stages_audit = None
        if not self.is_sqlite:
            view._use(schema)
        return view

    async def resolve_audit_staging(self) -> bool:
        """Whether this database stages audit rows; with ``stages_audit`` None, found out once:
        whether this login may insert into the audit sink's staging table (migration 0018)."""
        if self.stages_audit is None:
            self.stages_audit = await self._may_stage_audit()
        return self.stages_audit

    async def _may_stage_audit(self) -> bool:
        probe = _SQLITE_CAN_STAGE if self.is_sqlite else _PG_CAN_STAGE
        try:
            async with self._pool_engine.connect() as connection:
                return bool((await connection.exec_driver_sql(probe)).scalar())
        except SQLAlchemyError:  # no right even to look at the audit schema
            return False

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error.

        Outbox rows staged in it (``UnitOfWork.emit``, under ``STAGED_OUTBOX``) and, if this
        database stages them, audit rows (``STAGED_AUDIT``) are inserted together, in one
        statement, just before the commit.
        """
        if self.stages_audit is None:
            await self.resolve_audit_staging()
        with span("db transaction", {"db.system": self._system}):
            session = self._sessions()
            audit: list[AuditRow] = []
            try:
                async with session.begin():
                    staged: list[dict[str, Any]] = []
                    session.info[_DATABASE] = self
                    session.info[STAGED_OUTBOX] = staged
                    if self.stages_audit:
                        session.info[STAGED_AUDIT] = audit
                    yield session
                    # Not if rolled back by the caller.
                    if (staged or audit) and session.in_transaction():
                        await self._write_staged(session, staged, audit)
                    else:
                        audit = []
            finally:
                if session.in_transaction():  # a connection to give back: SQLAlchemy's
                    async with session:  # close, completed even if this task is cancelled
                        pass
                else:  # nothing to give back, so no I/O: closed at once, not in a task
                    session.sync_session.close()
            if audit:  # committed (an error would have left the block above)
                for listener in tuple(_audit_listeners):
                    listener()

    async def claim(
        self, session: AsyncSession, consumer: str, keys: list[InboxKey]
    ) -> set[InboxKey]:
        """Record messages in ``consumer``'s inbox; the keys it had not processed before.

        One INSERT ... ON CONFLICT DO NOTHING RETURNING for them all: a concurrent duplicate
        waits on the row lock and then inserts nothing. The rows that came back are the
        answer; the driver's ``rowcount`` is not (psycopg 3 reports -1 whatever happened).
        A key given twice is claimed once.
        """
        now = utcnow()
        # In key order: two batches claiming the same keys lock them in the same order.
        ordered = sorted(keys)
        if not self.is_sqlite:
            params: tuple[Any, ...]
            if len(ordered) == 1:
                params = (consumer, *ordered[0], now)
            else:
                params = (consumer, now, [key[0] for key in ordered], [key[1] for key in ordered])
            statement = self._claim_sql[len(ordered) > 1]
            return {
                (source, id_)
                for source, id_ in await self._driver(session, statement, params, rows=True)
            }
        rows = [
            {"consumer": consumer, "event_source": source, "event_id": id_, "processed_at": now}
            for source, id_ in ordered
        ]
        connection = await session.connection()
        claimed = await connection.execute(_SQLITE_INBOX_CLAIM, rows)
        return {(row.event_source, row.event_id) for row in claimed}

    async def fetch(
        self, session: AsyncSession, statement: Executable, params: Mapping[str, Any]
    ) -> list[Any]:
        """Run a Core statement built once in the session's transaction; the rows it returned
        (none for a statement that returns none).

        On PostgreSQL it is compiled once per parameter names (``blume_runtime.statements``)
        and sent on the transaction's psycopg connection; rows are named tuples. On SQLite it
        runs through SQLAlchemy; rows are SQLAlchemy's. Either way a row's columns are its
        attributes, and ``row._asdict()`` maps them.
        """
        compiled = None if self.is_sqlite else self._compiled(statement, tuple(params))
        if compiled is None:
            return await _through_sqlalchemy(session, statement, params)
        rows = await self._driver(
            session, compiled.sql, compiled.parameters(params), rows=compiled.row is not None
        )
        return compiled.rows(rows)

    def _compiled(self, statement: Executable, names: tuple[str, ...]) -> CompiledStatement | None:
        key = (id(statement), names)
        compiled = self._statements.get(key)
        if compiled is None:
            if len(self._statements) >= _COMPILED_STATEMENTS_KEPT:
                return None
            dialect = self._pool_engine.dialect
            compiled = self._statements[key] = compile_statement(
                statement, dialect, self.schema, names
            )
        return compiled

    async def _write_staged(
        self, session: AsyncSession, outbox: list[dict[str, Any]], audit: list[AuditRow]
    ) -> None:
        if self.is_sqlite:
            connection = await session.connection()
            if outbox:
                await connection.execute(_SQLITE_OUTBOX_INSERT, outbox)
            if audit:
                columns = ("event_source", "event_id", "received_at", "entry")
                await connection.execute(
                    _SQLITE_AUDIT_STAGE, [dict(zip(columns, row, strict=True)) for row in audit]
                )
            return
        params: tuple[Any, ...] = ()
        if len(audit) == 1:
            params = audit[0]
        elif audit:
            params = tuple(list(column) for column in zip(*audit, strict=True))
        if len(outbox) == 1:
            params += tuple(outbox[0][column] for column in _OUTBOX_COLUMNS)
        elif outbox:
            params += tuple([row[column] for row in outbox] for column in _OUTBOX_COLUMNS)
        statement = self._end_sql[(min(len(outbox), 2), min(len(audit), 2))]
        await self._driver(session, statement, params, rows=False)

    async def _driver(
        self,
        session: AsyncSession,
        statement: str,
        params: Sequence[Any] | Mapping[str, Any],
        *,
        rows: bool,
    ) -> list[tuple[Any, ...]]:
        """Run ``statement`` on the session's psycopg connection, in its transaction.

        A failure is handled as SQLAlchemy handles its own statements' (a lost connection
        invalidates the pool; the error is raised as SQLAlchemy's, parameters hidden), so
        callers and the retry classes see what they saw before.
        """
        # The connection stays the same for the session's transaction: looked up once.
        # Another transaction of the session (after a rollback) may have another.
        transaction = session.sync_session.get_transaction()
        known = session.info.get(_DRIVER)
        if known is None or known[0] is not transaction or transaction is None:
            connection = await session.connection()
            raw = await connection.get_raw_connection()
            driver = cast(psycopg.AsyncConnection[Any], raw.driver_connection)
            known = session.info[_DRIVER] = (
                session.sync_session.get_transaction(),
                connection,
                driver,
            )
        _, connection, driver = known
        metrics.DB_STATEMENTS.inc()
        try:
            cursor = await driver.execute(statement, params)
            return await cursor.fetchall() if rows else []
        except BaseException as error:  # as SQLAlchemy: a cancelled statement's connection
            await _raise_as_sqlalchemy(connection, error, statement, params)  # is not reused
            raise  # not reached: the line above raises

    async def dispose(self) -> None:
        """Close the pool; a view from ``in_schema`` leaves it to the database it came from."""
        if self._owns_pool:
            await self._pool_engine.dispose()


async def fetch(
    session: AsyncSession, statement: Executable, params: Mapping[str, Any] | None = None
) -> list[Any]:
    """Run a Core statement built once (at import) in the session's transaction; its rows.

    In a ``Database.transaction`` on PostgreSQL it goes to the driver directly
    (``Database.fetch``); anywhere else through SQLAlchemy, as ``connection.execute``. Like
    ``connection.execute``, it does not flush the session's pending ORM changes first.
    """
    database = session.info.get(_DATABASE)
    if isinstance(database, Database):
        return await database.fetch(session, statement, params or {})
    return await _through_sqlalchemy(session, statement, params or {})


async def _through_sqlalchemy(
    session: AsyncSession, statement: Executable, params: Mapping[str, Any]
) -> list[Any]:
    result = await (await session.connection()).execute(statement, dict(params))
    return list(result) if result.returns_rows else []


async def execute(
    session: AsyncSession, statement: Executable, params: Mapping[str, Any] | None = None
) -> None:
    """``fetch`` for a statement whose rows, if any, are not needed."""
    await fetch(session, statement, params)


def dialect_name(session: AsyncSession) -> str:
    """``postgresql`` or ``sqlite``: which of a statement's dialect forms to run."""
    bind = session.bind
    assert bind is not None
    return bind.dialect.name


async def flush_pending(session: AsyncSession) -> None:
    """Flush the session's ORM changes, if it has any (a clean session's flush does nothing
    but still costs a switch into SQLAlchemy's greenlet)."""
    if session.new or session.dirty or session.deleted:
        await session.flush()


async def _raise_as_sqlalchemy(
    connection: AsyncConnection,
    error: BaseException,
    statement: str,
    params: Sequence[Any] | Mapping[str, Any],
) -> None:
    def handle(sync_connection: Connection) -> None:
        # SQLAlchemy's own path for a failed statement: disconnect detection, invalidation
        # of the connection and the pool, ``handle_error`` events, the wrapped exception.
        # It reads the exception being handled (``sys.exc_info``): raised here for it.
        try:
            raise error
        except BaseException:  # noqa: BLE001 - handed to SQLAlchemy, which raises
            sync_connection._handle_dbapi_exception(error, statement, params, None, None)

    await connection.run_sync(handle)


def _count_commit(_connection: Any) -> None:
    metrics.DB_TRANSACTIONS.inc()


def _count_statement(*_args: Any) -> None:
    metrics.DB_STATEMENTS.inc()


def _count_checkout(*_args: Any) -> None:
    metrics.DB_CHECKOUTS.inc()


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # The driver's own implicit BEGIN (deferred) is replaced by _sqlite_begin_immediate.
    connection.isolation_level = None
    cursor = connection.cursor()
    # Every worker, the gateway's projections and the audit sealer write to the one file of
    # the embedded default; on a loaded machine a writer can wait for the lock for seconds.
    # Set first, so that the journal-mode pragma below waits as long as any statement.
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    """Take the write lock when a transaction begins, waiting for it (``busy_timeout``).

    A deferred transaction that reads, then writes, fails at once with "database is locked"
    when another connection wrote in between (SQLite cannot wait there without risking a
    deadlock): two sealers, or a worker and the sealer, did exactly that. Readers in WAL mode
    are not blocked by the lock; writers were one at a time anyway.
    """
    connection.exec_driver_sql("BEGIN IMMEDIATE")
