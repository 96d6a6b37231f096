"""The migration history matches the models, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from blume_runtime.db import database_url
from blume_share.schema import (
    SERVICE_TABLES,
    alembic_config,
    current,
    head,
    include_name,
    load_models,
    migrator_connect_args,
    schema_metadata,
    upgrade,
)
from sqlalchemy import create_engine, text


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


SERVICE_SCHEMAS = tuple(SERVICE_TABLES)
"""The schemas of migration 0011, one per service."""


def _insert_a_share(connection: Any, table: str) -> None:
    now = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    connection.execute(
        text(
            f"INSERT INTO {table} (share_id, tenant_id, method, state, correlation_id, "
            "request_source, request_id, created_at, updated_at) VALUES ('shr_1', 't', "
            "'external_link', 'completed', 'c', '/s', 'r', :now, :now)"
        ),
        {"now": now},
    )


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    sync_url = _sync(url)
    engine = create_engine(sync_url, connect_args=migrator_connect_args(sync_url))
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(query))]
    finally:
        engine.dispose()


def test_sqlite_downgrade_to_0010_and_back_keeps_the_shares(tmp_path: Path) -> None:
    """On SQLite (where 0011 changes nothing) head -> 0010 -> head keeps a share's row and
    ends with the schema the models describe."""
    url = f"sqlite:///{tmp_path / 'round-trip.db'}"
    upgrade(url)
    engine = create_engine(_sync(url))
    with engine.begin() as connection:
        _insert_a_share(connection, "dispatcher_shares")
    engine.dispose()
    command.downgrade(alembic_config(url), "0010")
    assert current(url) == "0010"
    assert _rows(url, "SELECT share_id, state FROM dispatcher_shares") == [("shr_1", "completed")]
    upgrade(url)
    assert current(url) == head()
    assert _rows(url, "SELECT share_id, state FROM dispatcher_shares") == [("shr_1", "completed")]
    assert pending_changes(url) == []


@pytest.mark.integration
def test_postgres_downgrade_to_0010_and_back_keeps_every_row(database_url: str) -> None:
    """On PostgreSQL head -> 0010 -> head: 0011's downgrade brings every table back to
    ``public`` with its rows, merges the per-service inboxes and outboxes into one each,
    drops the schemas and the services' grants (their roles stay: they are cluster-wide),
    and upgrading again puts every row back in its service's schema."""
    upgrade(database_url)
    sync_url = _sync(database_url)
    engine = create_engine(sync_url, connect_args=migrator_connect_args(sync_url))
    with engine.begin() as connection:
        _insert_a_share(connection, "share_dispatcher.dispatcher_shares")
        for schema in SERVICE_SCHEMAS:
            connection.execute(
                text(
                    f"INSERT INTO {schema}.runtime_inbox VALUES ('{schema}', '/src', 'e-1', now())"
                )
            )
        connection.execute(
            text(
                "INSERT INTO link_issuer.runtime_outbox VALUES "
                "('out-1', 'share.link.issued', :body, now())"
            ),
            {"body": b'{"source":"/blume-share/link_issuer","id":"out-1"}'},
        )
    engine.dispose()

    command.downgrade(alembic_config(database_url), "0010")

    assert current(database_url) == "0010"
    share = "SELECT share_id, state FROM public.dispatcher_shares"
    assert _rows(database_url, share) == [("shr_1", "completed")]
    inbox = "SELECT consumer FROM public.runtime_inbox ORDER BY consumer"
    assert _rows(database_url, inbox) == [(schema,) for schema in sorted(SERVICE_SCHEMAS)]
    outbox = "SELECT event_id FROM public.runtime_outbox"
    assert _rows(database_url, outbox) == [("out-1",)]
    schemas = ", ".join(f"'{schema}'" for schema in SERVICE_SCHEMAS)
    left = f"SELECT nspname FROM pg_namespace WHERE nspname IN ({schemas})"
    assert _rows(database_url, left) == []
    granted = (
        "SELECT has_table_privilege('blume_share_dispatcher', 'public.dispatcher_shares', 'SELECT')"
    )
    assert _rows(database_url, granted) == [(False,)]

    upgrade(database_url)

    assert current(database_url) == head()
    assert _rows(
        database_url, "SELECT share_id, state FROM share_dispatcher.dispatcher_shares"
    ) == [("shr_1", "completed")]
    for schema in SERVICE_SCHEMAS:
        assert _rows(database_url, f"SELECT consumer FROM {schema}.runtime_inbox") == [(schema,)]
    assert _rows(database_url, "SELECT event_id FROM link_issuer.runtime_outbox") == [("out-1",)]
    assert pending_changes(database_url) == []


def _sync(url: str) -> str:
    return database_url(url, use_async=False)


def test_a_fresh_sqlite_file_is_migrated_into_write_ahead_logging(tmp_path: Path) -> None:
    """The embedded default's file leaves its first migration in WAL mode, as the runtime's
    connections use it: the first run's workers, connecting together, never have to switch
    it (a switch needs the file to itself, and failed as "database is locked")."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(url)
    assert _rows(url, "PRAGMA journal_mode") == [("wal",)]
