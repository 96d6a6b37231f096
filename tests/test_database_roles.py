"""Each service's role reads and writes its own schema only; no role rewrites the audit store.

On real PostgreSQL, in a fresh database migrated to head with role names of its own (roles
are cluster-wide: a unique prefix keeps parallel runs apart; they are dropped afterwards).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from alembic import command
from blume_runtime.db import Database, InboxEntry, OutboxMessage, utcnow
from blume_share.schema import SERVICE_TABLES, alembic_config, upgrade
from psycopg import errors
from sqlmodel import col, delete, select

pytestmark = pytest.mark.integration

SERVICES = tuple(SERVICE_TABLES)
AUDIT = "audit_sink"
AUDIT_STORE = (
    "audit_records",
    "audit_checkpoints",
    "audit_chain_heads",
    "audit_purges",
    "audit_retention",
    "audit_legal_holds",
)
AUDIT_WRITER = "blume_app"
"""Migration 0002's audit writer, narrowed to the audit schema by 0011."""


@dataclass(frozen=True)
class Cluster:
    """A fresh database, its admin URL, and the prefix of its services' roles."""

    admin_url: str
    prefix: str

    def role(self, service: str) -> str:
        return f"{self.prefix}{service}"

    def url_as(self, service: str) -> str:
        """A login as ``service``'s role (the test cluster trusts local connections)."""
        parts = urlsplit(self.admin_url)
        host = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit(parts._replace(netloc=f"{self.role(service)}@{host}"))


@contextmanager
def database_with_roles(admin_url: str, *, revision: str | None = "head") -> Iterator[Cluster]:
    """A new database migrated to ``revision`` with roles ``t<hex>_<service>``; the
    database and then the roles are dropped on the way out."""
    name = f"blume_roles_{uuid.uuid4().hex[:12]}"
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    try:
        if revision is not None:
            command.upgrade(alembic_config(url, role_prefix=prefix), revision)
        yield Cluster(url, prefix)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            for service in SERVICES:
                admin.execute(f"DROP ROLE IF EXISTS {prefix}{service}")


@pytest.fixture(scope="module")
def cluster(postgres_admin_url: str) -> Iterator[Cluster]:
    with database_with_roles(postgres_admin_url) as made:
        with psycopg.connect(made.admin_url, autocommit=True) as admin:
            for service in SERVICES:
                admin.execute(f"ALTER ROLE {made.role(service)} LOGIN")
        yield made


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_reads_and_writes_its_own_schema(cluster: Cluster, service: str) -> None:
    """As its own login, a service writes, reads and deletes its inbox and outbox rows through
    the runtime's ``Database`` (its schema named by the service), and reads each of its tables."""
    db = Database(cluster.url_as(service), schema=service)
    try:
        async with db.transaction() as session:
            session.add(InboxEntry(consumer=service, event_source="/test", event_id="e-1"))
            session.add(OutboxMessage(event_id="e-2", routing_key="share.test", body=b"{}"))
        async with db.transaction() as session:
            inbox = (await session.exec(select(InboxEntry))).all()
            outbox = (await session.exec(select(OutboxMessage))).all()
            await session.exec(delete(OutboxMessage).where(col(OutboxMessage.event_id) == "e-2"))
        assert [(row.consumer, row.event_id) for row in inbox] == [(service, "e-1")]
        assert [row.event_id for row in outbox] == ["e-2"]
    finally:
        await db.dispose()
    with psycopg.connect(cluster.url_as(service)) as connection:
        assert connection.execute("SELECT current_user").fetchone() == (cluster.role(service),)
        for model in SERVICE_TABLES[service]:
            table = model.__tablename__
            connection.execute(f"SELECT count(*) FROM {service}.{table}").fetchone()
    # The rows went to this schema, where the migrator sees them too.
    with psycopg.connect(cluster.admin_url) as admin:
        found = admin.execute(f"SELECT consumer FROM {service}.runtime_inbox").fetchall()
    assert found == [(service,)]


def test_the_gateway_is_refused_the_dispatchers_shares(cluster: Cluster) -> None:
    """The access gateway's login cannot read the dispatcher's shares: it learns of them from
    events only."""
    with (
        psycopg.connect(cluster.url_as("access_gateway")) as connection,
        pytest.raises(errors.InsufficientPrivilege, match="permission denied"),
    ):
        connection.execute("SELECT * FROM share_dispatcher.dispatcher_shares")


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_is_refused_every_other_schema(cluster: Cluster, service: str) -> None:
    """No service role may read or write another service's tables, inbox or outbox."""
    for other in SERVICES:
        if other == service:
            continue
        for statement in (
            f"SELECT 1 FROM {other}.runtime_inbox",
            f"INSERT INTO {other}.runtime_outbox VALUES ('x', 'k', '', now())",
            f"SELECT 1 FROM {other}.{SERVICE_TABLES[other][0].__tablename__}",
        ):
            with (
                psycopg.connect(cluster.url_as(service)) as connection,
                pytest.raises(errors.InsufficientPrivilege, match="permission denied"),
            ):
                connection.execute(statement)


def _refused_to_change_the_audit_store(connection: psycopg.Connection[tuple[object, ...]]) -> None:
    for table in AUDIT_STORE:
        for statement in (
            f"UPDATE {AUDIT}.{table} SET chain_id = chain_id",
            f"DELETE FROM {AUDIT}.{table}",
        ):
            if table == "audit_chain_heads" and statement.startswith("UPDATE"):
                continue  # moving a head forward is the sealer's job; a trigger checks it
            with connection.transaction(), pytest.raises(errors.InsufficientPrivilege):
                connection.execute(statement)


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_role_may_update_or_delete_the_audit_store(
    cluster: Cluster, service: str
) -> None:
    """Every service's role, the audit sink's included, is refused UPDATE and DELETE on the
    audit records, checkpoints, purges, retention and legal holds, and DELETE of chain heads."""
    with psycopg.connect(cluster.url_as(service), autocommit=True) as connection:
        _refused_to_change_the_audit_store(connection)


def test_the_audit_writer_may_insert_and_read_but_never_update_or_delete(
    cluster: Cluster,
) -> None:
    """``blume_app``, the audit writer of 0002, reads the audit store and nothing else now;
    UPDATE and DELETE on it are refused as for every service."""
    with psycopg.connect(cluster.admin_url, autocommit=True) as connection:
        connection.execute(f"SET ROLE {AUDIT_WRITER}")
        assert connection.execute(f"SELECT count(*) FROM {AUDIT}.audit_records").fetchone() == (0,)
        _refused_to_change_the_audit_store(connection)
        with pytest.raises(errors.InsufficientPrivilege):
            connection.execute("SELECT 1 FROM share_dispatcher.dispatcher_shares")


def test_the_audit_sinks_role_writes_the_audit_store(cluster: Cluster) -> None:
    """The audit sink's role may stage events and append records (INSERT and SELECT)."""
    with psycopg.connect(cluster.url_as(AUDIT)) as connection:
        connection.execute(
            f"INSERT INTO {AUDIT}.audit_pending (event_source, event_id, received_at, entry) "
            "VALUES ('/test', 'e-1', now(), '{}')"
        )
        staged = connection.execute(f"SELECT event_id FROM {AUDIT}.audit_pending").fetchall()
    assert staged == [("e-1",)]


def test_upgrade_from_0010_moves_every_row_into_its_services_schema(
    postgres_admin_url: str,
) -> None:
    """A database at 0010 with data keeps all of it: tables move whole, inbox rows go to their
    consumer's schema and outbox rows to their producer's."""
    with database_with_roles(postgres_admin_url, revision="0010") as made:
        now = utcnow()
        with psycopg.connect(made.admin_url) as connection:
            connection.execute(
                "INSERT INTO dispatcher_shares (share_id, tenant_id, method, state, "
                "correlation_id, request_source, request_id, created_at, updated_at) VALUES "
                "('shr_1', 't', 'external', 'completed', 'c', '/s', 'r', %s, %s)",
                (now, now),
            )
            for consumer in ("notifier", "access_gateway"):
                connection.execute(
                    "INSERT INTO runtime_inbox VALUES (%s, '/src', 'e-1', %s)", (consumer, now)
                )
            connection.execute(
                "INSERT INTO runtime_outbox VALUES ('out-1', 'share.link.issued', %s, %s)",
                (b'{"source":"/blume-share/link_issuer","id":"out-1"}', now),
            )
        upgrade(made.admin_url, role_prefix=made.prefix)
        with psycopg.connect(made.admin_url) as connection:
            shares = connection.execute(
                "SELECT share_id, state FROM share_dispatcher.dispatcher_shares"
            ).fetchall()
            inboxes = {
                service: connection.execute(
                    f"SELECT consumer FROM {service}.runtime_inbox"
                ).fetchall()
                for service in SERVICES
            }
            outbox = connection.execute("SELECT event_id FROM link_issuer.runtime_outbox")
            moved_outbox = outbox.fetchall()
            left = connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
    assert shares == [("shr_1", "completed")]
    assert {service: rows for service, rows in inboxes.items() if rows} == {
        "notifier": [("notifier",)],
        "access_gateway": [("access_gateway",)],
    }
    assert moved_outbox == [("out-1",)]
    assert left == [("alembic_version",)]
