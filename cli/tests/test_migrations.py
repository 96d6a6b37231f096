"""The migration history matches the models, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from blume_runtime.db import database_url
from blume_share.schema import current, load_models, upgrade
from sqlalchemy import create_engine


def pending_changes(url: str) -> list[object]:
    engine = create_engine(database_url(url, use_async=False))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, load_models().metadata))
    finally:
        engine.dispose()


def test_sqlite_schema_matches_models(tmp_path: Path) -> None:
    """After upgrade, SQLite has exactly the tables and columns the models describe."""
    url = f"sqlite:///{tmp_path / 'schema.db'}"
    upgrade(url)
    upgrade(url)  # idempotent
    assert current(url) is not None
    assert pending_changes(url) == []


@pytest.mark.integration
def test_postgres_schema_matches_models(database_url: str) -> None:
    """After upgrade, PostgreSQL has exactly the tables and columns the models describe."""
    upgrade(database_url)
    assert pending_changes(database_url) == []


def test_every_table_module_is_loaded() -> None:
    """The migration environment sees every service's tables, not only those imported by chance."""
    import subprocess
    import sys

    listed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from blume_share.schema import load_models;"
            "print(sorted(load_models().metadata.tables))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for table in (
        "audit_records",
        "blume_patient_accounts",
        "dispatcher_shares",
        "link_issuer_links",
        "notifier_notifications",
        "runtime_outbox",
    ):
        assert table in listed
