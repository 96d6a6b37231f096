"""Alembic environment: one migration history for every service's tables.

SQLite (the embedded default) keeps every table unqualified in one file; PostgreSQL keeps
each service's tables in its own schema (``blume_share.schema.schema_metadata``).
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from blume_runtime.db import UtcDateTime
from blume_share.schema import include_name, load_models, migrator_connect_args, schema_metadata
from sqlalchemy import Engine, MetaData, create_engine, event
from sqlmodel.sql.sqltypes import AutoString


def render_item(kind: str, item: Any, _context: AutogenContext) -> str | Literal[False]:
    """Write our column types as the plain SQLAlchemy types they store as."""
    if kind == "type" and isinstance(item, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    if kind == "type" and isinstance(item, AutoString):
        return f"sa.String(length={item.length})"
    return False


def run_migrations() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url, connect_args=migrator_connect_args(url))
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _write_ahead_log)
    try:
        _migrate(engine)
    finally:
        engine.dispose()


def _write_ahead_log(dbapi_connection: Any, _record: Any) -> None:
    """The embedded default's file is in WAL mode from its first migration on, as the
    runtime uses it: switching later needs the file to itself, which the first run's
    several workers, opening their connections together, may not give it."""
    dbapi_connection.execute("PRAGMA journal_mode=WAL")


def _migrate(engine: Engine) -> None:
    with engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        target: MetaData = schema_metadata() if postgres else load_models().metadata
        context.configure(
            connection=connection,
            target_metadata=target,
            render_as_batch=not postgres,
            compare_type=True,
            render_item=render_item,
            include_schemas=postgres,
            include_name=include_name,
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
