"""The migration history matches the models, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from blume_runtime.db import database_url
from blume_share.schema import (
    current,
    include_name,
    load_models,
    migrator_connect_args,
    schema_metadata,
    upgrade,
)
from sqlalchemy import create_engine


def pending_changes(url: str) -> list[object]:
    sync_url = database_url(url, use_async=False)
    engine = create_engine(sync_url, connect_args=migrator_connect_args(sync_url))
    try:
        with engine.connect() as connection:
            postgres = connection.dialect.name == "postgresql"
            options = {"compare_type": True, "include_schemas": postgres}
            if postgres:
                options["include_name"] = include_name
            context = MigrationContext.configure(connection, opts=options)
            target = schema_metadata() if postgres else load_models().metadata
            return list(compare_metadata(context, target))
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
