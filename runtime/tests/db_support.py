"""A SQLite database with the runtime's own tables (inbox and outbox), for runtime tests."""

from __future__ import annotations

from pathlib import Path

from blume_runtime.db import Database, InboxEntry, OutboxMessage
from sqlmodel import SQLModel


async def runtime_database(path: Path) -> Database:
    database = Database(f"sqlite:///{path}")
    async with database.engine.begin() as connection:
        await connection.run_sync(
            SQLModel.metadata.create_all,
            tables=[InboxEntry.__table__, OutboxMessage.__table__],  # type: ignore[attr-defined]
        )
    return database


NO_AUDIT_STORE = True
"""``Settings.audit_copies`` for a runtime over ``runtime_database``: it has no audit staging
table, as a service's database where the audit sink records copies instead."""
