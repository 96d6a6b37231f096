"""Each service's role reads and writes its own schema only; no role rewrites the audit store.

On real PostgreSQL, in a fresh database migrated to head with role names of its own (roles
are cluster-wide: a unique prefix keeps parallel runs apart; they are dropped afterwards).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import structlog
from alembic import command
from blume_audit_sink.models import AuditRecord
from blume_audit_sink.sealer import seal_all
from blume_audit_sink.staging_roles import StagingRoles
from blume_audit_sink.verify import verify
from blume_contracts.artefacts import EXAMPLES_DIR
from blume_contracts.audit_catalog import UNTRUSTED_PRODUCER_TYPE
from blume_contracts.audit_entry import SECURITY_CHAIN
from blume_contracts.registry import spec_for
from blume_runtime.db import Database, InboxEntry, OutboxMessage, utcnow
from blume_runtime.unit_of_work import UnitOfWork
from blume_share.schema import SERVICE_TABLES, alembic_config, upgrade
from psycopg import errors
from pydantic import BaseModel
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


STAGE_AS_ITS_PRODUCER = (
    f"INSERT INTO {AUDIT}.audit_pending (event_source, event_id, received_at, entry) "
    "VALUES ('/blume-share/notifier', 'e-staged', now(), '{}')"
)


@pytest.mark.parametrize("service", [name for name in SERVICES if name != AUDIT])
def test_a_service_may_only_insert_into_the_audit_staging_and_never_say_who_it_is(
    cluster: Cluster, service: str
) -> None:
    """Each producer's role inserts staged audit rows, and the database records its role as
    ``staged_by``; naming ``staged_by`` itself, reading, changing or deleting staged rows
    (its own included), and touching any other audit table are refused."""
    with psycopg.connect(cluster.url_as(service), autocommit=True) as connection:
        connection.execute(STAGE_AS_ITS_PRODUCER.replace("e-staged", f"e-{service}"))
        for statement in (
            f"INSERT INTO {AUDIT}.audit_pending "
            "(event_source, event_id, received_at, entry, staged_by) "
            f"VALUES ('/x', 'e-forged-{service}', now(), '{{}}', '{cluster.role(AUDIT)}')",
            f"SELECT entry FROM {AUDIT}.audit_pending",
            f"UPDATE {AUDIT}.audit_pending SET entry = '{{}}'",
            f"DELETE FROM {AUDIT}.audit_pending",
            f"INSERT INTO {AUDIT}.audit_records (chain_id) VALUES ('x')",
            f"SELECT 1 FROM {AUDIT}.audit_chain_heads",
        ):
            with connection.transaction(), pytest.raises(errors.InsufficientPrivilege):
                connection.execute(statement)
    with psycopg.connect(cluster.admin_url) as admin:
        staged_by = admin.execute(
            f"SELECT staged_by FROM {AUDIT}.audit_pending WHERE event_id = %s", (f"e-{service}",)
        ).fetchall()
        admin.execute(f"DELETE FROM {AUDIT}.audit_pending WHERE event_id = %s", (f"e-{service}",))
    assert staged_by == [(cluster.role(service),)]


def _event(event_type: str) -> BaseModel:
    data = json.loads((EXAMPLES_DIR / f"{event_type}.json").read_text())["data"]
    return spec_for(event_type).model.model_validate(data)


async def _emit(cluster: Cluster, login: str, producer: str, event_type: str) -> str:
    """As ``login``'s role, emit an event sourced ``/blume-share/<producer>``; its id."""
    db = Database(cluster.url_as(login), schema=login, stages_audit=True)
    try:
        async with db.transaction() as session:
            work = UnitOfWork(service=producer, session=session)
            return work.emit(
                event_type, _event(event_type), tenantid="t-roles", correlationid="c-roles"
            ).id
    finally:
        await db.dispose()


async def test_the_sealer_records_a_row_staged_under_another_service_as_a_security_event(
    cluster: Cluster,
) -> None:
    """Rows staged by each producer's own role for its own events are sealed as those events;
    a row the link issuer's role staged under the dispatcher's name is sealed as a security
    record naming that role and the claims, never as the dispatcher's event; the chains verify."""
    with psycopg.connect(cluster.admin_url) as admin:  # what earlier tests left staged
        admin.execute(f"DELETE FROM {AUDIT}.audit_pending")
    genuine = [
        await _emit(cluster, "share_dispatcher", "share_dispatcher", "share.accepted"),
        await _emit(cluster, "notifier", "notifier", "share.notification.sent"),
    ]
    forged = await _emit(cluster, "link_issuer", "share_dispatcher", "share.completed")
    db = Database(cluster.admin_url, schema=AUDIT)
    try:
        assert await seal_all(db, roles=StagingRoles()) == 3
        async with db.transaction() as session:
            records = (await session.exec(select(AuditRecord))).all()
            assert (await verify(session)).ok
    finally:
        await db.dispose()
    by_type = {record.event_type: record for record in records}
    assert sorted(by_type) == sorted(
        ["share.accepted", "share.notification.sent", UNTRUSTED_PRODUCER_TYPE]
    )
    assert [by_type[t].event_id for t in ("share.accepted", "share.notification.sent")] == genuine
    security = by_type[UNTRUSTED_PRODUCER_TYPE]
    assert security.chain_id == SECURITY_CHAIN
    assert json.loads(security.payload) == {
        "cause": "untrusted_producer",
        "refusal": "staged_by_a_role_not_its_producer",
        "claimed_type": "share.completed",
        "claimed_source": "/blume-share/share_dispatcher",
        "claimed_id": forged,
        "claimed_tenant": "t-roles",
        "producer": f"db:{cluster.role('link_issuer')}",
    }


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


@pytest.mark.parametrize("start", ["0010", "0017"])
def test_a_role_prefix_that_is_not_a_plain_name_is_refused_before_any_role_is_made(
    postgres_admin_url: str, start: str
) -> None:
    """The role prefix goes into SQL: upgrading with one holding a quote and a statement
    fails with a clear error, whether the upgrade runs the migration that names the service
    roles (from 0010) or only the one that grants them audit staging (from 0017), and no role
    by that name is created."""
    hostile = "x'; DROP TABLE audit_sink.audit_records; --"
    with database_with_roles(postgres_admin_url, revision=start) as made:
        with pytest.raises(ValueError, match="letters, digits and underscores"):
            upgrade(made.admin_url, role_prefix=hostile)
        with psycopg.connect(made.admin_url) as connection:
            made_roles = connection.execute(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE 'x''%'"
            ).fetchall()
            version = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert made_roles == []
    assert version == (start,)


def test_the_example_runs_with_each_service_on_its_own_login(
    postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``BLUME_<SERVICE>_DATABASE_URL`` set for every service: each connects as its own role,
    and the example share still completes with its email and an intact audit chain (the
    CLI's report reads as the owner, ``BLUME_DATABASE_URL``) that holds each service's events,
    staged under its own role, as themselves."""
    from blume_runtime.app import Runtime
    from blume_runtime.service import Service
    from blume_runtime.settings import Settings, service_database_env
    from blume_share.cli import app
    from typer.testing import CliRunner

    with database_with_roles(postgres_admin_url) as made:
        with psycopg.connect(made.admin_url, autocommit=True) as admin:
            for service in SERVICES:
                admin.execute(f"ALTER ROLE {made.role(service)} LOGIN")
        for name in ("AMQP_URL", "SMTP_URL", "TENANT_POLICY_FILE"):
            monkeypatch.delenv(f"BLUME_{name}", raising=False)
        monkeypatch.setenv("BLUME_DATABASE_URL", made.admin_url)
        monkeypatch.setenv("BLUME_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.setenv("BLUME_LOG_FORMAT", "json")
        for service in SERVICES:
            monkeypatch.setenv(service_database_env(service), made.url_as(service))

        runtime = Runtime(Settings(), [Service("notifier")], Database(made.admin_url))
        assert runtime.database_for("notifier").url.startswith(
            f"postgresql+psycopg://{made.role('notifier')}@"
        )

        saved_logging = structlog.get_config()
        try:
            result = CliRunner().invoke(app, ["run", "--example", "--until-idle"])
        finally:  # the command logs to its state directory; later tests must not
            structlog.configure(**saved_logging)
        assert result.exit_code == 0, result.output
        assert ": completed" in result.stdout
        assert "audit chain: intact" in result.stdout
        # Each service staged its own events under its own role, and each was trusted.
        with psycopg.connect(made.admin_url) as admin:
            types = {
                row[0] for row in admin.execute(f"SELECT event_type FROM {AUDIT}.audit_records")
            }
        assert {"share.accepted", "share.link.issued", "share.completed"} <= types
        assert UNTRUSTED_PRODUCER_TYPE not in types
