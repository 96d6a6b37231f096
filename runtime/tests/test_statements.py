"""Core statements built once, run with ``fetch``: on PostgreSQL's driver, as SQLAlchemy would.

The same statements run on PostgreSQL (compiled once, sent on psycopg) and on SQLite
(through SQLAlchemy): rows, types and errors must not tell the two paths apart.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from blume_runtime import metrics
from blume_runtime.db import Database, UtcDateTime, dialect_name, execute, fetch
from blume_runtime.statements import NotCompiledOnceError
from sqlalchemy import (
    Column,
    Enum,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc

from conftest import fresh_database


class Colour(enum.StrEnum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


SCHEMA = "palette_service"
_TABLE = Table(
    "swatch",
    MetaData(),
    Column("swatch_id", String(36), primary_key=True),
    Column(
        "colour",
        Enum(
            Colour,
            native_enum=False,
            length=16,
            values_callable=lambda members: [member.value for member in members],
        ),
        nullable=False,
    ),
    Column("uses", Integer, nullable=False, default=0),
    Column("painted_at", UtcDateTime, nullable=True),
)
_ADD = insert(_TABLE)
_REPAINT = (
    update(_TABLE)
    .where(
        _TABLE.c.swatch_id == bindparam("target"),
        or_(_TABLE.c.colour == Colour.RED, _TABLE.c.colour == Colour.GREEN),
    )
    .values(uses=_TABLE.c.uses + 1)
    .returning(_TABLE.c.swatch_id, _TABLE.c.colour, _TABLE.c.uses, _TABLE.c.painted_at)
)
_BY_COLOUR = (
    select(_TABLE.c.swatch_id, _TABLE.c.colour.label("shade"))
    .where(_TABLE.c.colour == bindparam("colour"))
    .order_by(_TABLE.c.swatch_id)
)
TORONTO = timezone(timedelta(hours=-5))


@contextmanager
def _postgres_with_table(admin_url: str) -> Iterator[str]:
    with fresh_database(admin_url) as url:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {SCHEMA}")
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        _TABLE.to_metadata(MetaData(), schema=SCHEMA).create(engine)
        engine.dispose()
        yield url


@pytest.fixture(params=["postgresql", "sqlite"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """The swatch table in a service's schema on PostgreSQL, or in a SQLite file."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'palette.db'}"
        _TABLE.metadata.create_all(create_engine(url))
        database = Database(url, schema=SCHEMA)
        yield database
        await database.dispose()
        return
    with _postgres_with_table(request.getfixturevalue("postgres_admin_url")) as url:
        database = Database(url, schema=SCHEMA)
        yield database
        await database.dispose()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    with _postgres_with_table(postgres_admin_url) as url:
        yield url


async def test_rows_come_back_typed_and_named_alike_on_both_backends(db: Database) -> None:
    """An INSERT, an UPDATE ... RETURNING and a SELECT with a label: enum members, aware
    UTC datetimes, attribute access and ``_asdict`` as SQLAlchemy gives them; a datetime in
    another zone is stored as the same moment."""
    painted = datetime(2026, 12, 8, 9, 30, tzinfo=TORONTO)
    async with db.transaction() as session:
        await execute(session, _ADD, {"swatch_id": "a", "colour": Colour.RED, "uses": 0})
        await execute(
            session,
            _ADD,
            {"swatch_id": "b", "colour": Colour.BLUE, "uses": 3, "painted_at": painted},
        )
        [repainted] = await fetch(session, _REPAINT, {"target": "a", "painted_at": painted})
        assert await fetch(session, _REPAINT, {"target": "b", "painted_at": painted}) == []
        shades = await fetch(session, _BY_COLOUR, {"colour": Colour.BLUE})
    assert repainted._asdict() == {
        "swatch_id": "a",
        "colour": Colour.RED,
        "uses": 1,
        "painted_at": painted.astimezone(UTC),
    }
    assert isinstance(repainted.colour, Colour)
    assert repainted.painted_at.tzinfo == UTC
    assert [(row.swatch_id, row.shade) for row in shades] == [("b", Colour.BLUE)]


async def test_a_naive_datetime_is_refused_as_sqlalchemy_refuses_it(db: Database) -> None:
    """The column type's own check runs on the driver's path too: a naive datetime is never
    stored, and nothing of the transaction is committed."""
    naive = {"swatch_id": "d", "colour": Colour.RED, "uses": 0, "painted_at": datetime(2026, 1, 1)}
    with pytest.raises((ValueError, sa_exc.StatementError), match="naive datetime"):  # noqa: PT012 - as above
        async with db.transaction() as session:
            await execute(session, _ADD, {"swatch_id": "c", "colour": Colour.RED, "uses": 0})
            await execute(session, _ADD, naive)
    async with db.transaction() as session:
        assert await fetch(session, _BY_COLOUR, {"colour": Colour.RED}) == []


async def test_a_duplicate_key_fails_as_sqlalchemy_integrity_error(db: Database) -> None:
    """A constraint violation on the driver's path is SQLAlchemy's IntegrityError, as the
    handlers and the retry classes expect."""
    row = {"swatch_id": "e", "colour": Colour.GREEN, "uses": 0}
    with pytest.raises(sa_exc.IntegrityError):  # noqa: PT012 - the transaction is the subject
        async with db.transaction() as session:
            await execute(session, _ADD, row)
            await execute(session, _ADD, row)


async def test_on_postgresql_a_statement_goes_to_the_driver_in_the_services_schema(
    postgres_url: str,
) -> None:
    """On PostgreSQL a statement runs once on psycopg (counted once, and never seen by
    SQLAlchemy's execution events) against the service's own schema."""
    db = Database(postgres_url, schema=SCHEMA)
    seen_by_sqlalchemy: list[str] = []
    event.listen(
        db.engine.sync_engine,
        "before_cursor_execute",
        lambda _conn, _cursor, statement, *_: seen_by_sqlalchemy.append(statement),
    )
    try:
        async with db.transaction() as session:
            assert dialect_name(session) == "postgresql"
            await execute(session, _ADD, {"swatch_id": "f", "colour": Colour.RED, "uses": 0})
            before = metrics.DB_STATEMENTS._value.get()
            assert len(await fetch(session, _BY_COLOUR, {"colour": Colour.RED})) == 1
            assert metrics.DB_STATEMENTS._value.get() - before == 1
    finally:
        await db.dispose()
    assert seen_by_sqlalchemy == []
    with psycopg.connect(postgres_url) as check:
        found = check.execute(f"SELECT colour FROM {SCHEMA}.swatch WHERE swatch_id = 'f'")
        assert found.fetchall() == [("red",)]


async def test_a_statement_needing_sqlalchemy_at_each_execution_is_refused_with_the_reason(
    postgres_url: str,
) -> None:
    """What SQLAlchemy does at each execution is refused on PostgreSQL with the reason: an
    ``IN`` of a list (expanded then), an INSERT leaving out a column whose default SQLAlchemy
    computes then, a returned column whose processing needs each result's type code (a
    NUMERIC), a textual statement (which does not say whether it returns rows)."""
    db = Database(postgres_url, schema=SCHEMA)
    expanding = select(_TABLE.c.swatch_id).where(_TABLE.c.colour.in_([Colour.RED, Colour.BLUE]))
    try:
        with pytest.raises(NotCompiledOnceError, match="through SQLAlchemy"):
            async with db.transaction() as session:
                await fetch(session, expanding)
        ratio = select((_TABLE.c.uses / 2.0).label("ratio"))
        with pytest.raises(NotCompiledOnceError, match=r"'ratio'.*type code"):
            async with db.transaction() as session:
                await fetch(session, ratio)
        with pytest.raises(NotCompiledOnceError, match="textual statement"):
            async with db.transaction() as session:
                await fetch(session, text("SELECT swatch_id FROM swatch"))
        with pytest.raises(NotCompiledOnceError, match=r"computes at each execution \(uses\)"):
            async with db.transaction() as session:
                await execute(session, _ADD, {"swatch_id": "g", "colour": Colour.RED})
    finally:
        await db.dispose()
