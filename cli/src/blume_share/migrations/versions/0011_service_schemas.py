"""service schemas: each service's tables, inbox and outbox in a schema of its own, used by a
role of its own; the audit roles of 0002 narrowed to the audit schema

On PostgreSQL:
- one schema per service, named after it: ``share_dispatcher``, ``link_issuer``,
  ``notifier``, ``audit_sink``, ``blume_publisher``, ``access_gateway``. The existing tables
  move there with their data, indexes, constraints, sequences and triggers (``ALTER TABLE
  ... SET SCHEMA``).
- the one ``runtime_inbox`` and ``runtime_outbox`` become one each per schema: inbox rows go
  to the schema of their ``consumer``, outbox rows to that of their event's ``source``
  (``/blume-share/<service>``). Inbox rows of a consumer that is none of the services are
  dropped (they only deduplicated); an outbox row of no service stops the migration: stop
  the services and let the outbox drain first.
- one role per service, ``<prefix><service>`` (prefix ``blume_`` unless the migrator sets
  ``BLUME_DATABASE_ROLE_PREFIX``): created NOLOGIN if missing, like the audit roles of 0002;
  ops give it LOGIN and a password, or grant it to a login (docs/operations.md). It gets
  USAGE on its own schema and SELECT, INSERT, UPDATE, DELETE on its tables (sequences too),
  now and for tables later migrations create there, and nothing on any other schema. The
  schemas stay the migrator's: a service cannot create, alter or drop tables (DDL is for
  migrations), so the audit sink's role cannot drop the audit store either.
- the audit roles of 0002 narrowed: ``blume_app`` (the audit writer) keeps INSERT and SELECT
  on the records and checkpoints, the forward-only UPDATE of chain heads and the staging
  table, now only in ``audit_sink``; its grants on every other table and its default
  privileges go. The audit sink's own role gets the same writer rights. No role but the
  owner has UPDATE or DELETE on the audit store; the triggers of 0002 refuse them even so.
  The audit functions move into ``audit_sink`` with ``search_path`` pinned to it.
- the database's ``search_path`` lists every service schema after ``public``, so the
  migrator's own sessions (the CLI's ``status``, ``patients`` and ``audit`` commands, psql)
  find tables by their unqualified names. Services do not rely on it: their sessions name
  their own schema (``blume_runtime.db.Database``). ``runtime_inbox`` and ``runtime_outbox``
  exist in every schema: qualify them.

On SQLite (the embedded default) nothing changes: SQLite has no schemas or roles.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from alembic import op
from blume_share.schema import migration_role_prefix

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUDIT: Final = "audit_sink"
TABLES: Final = {
    "share_dispatcher": ("dispatcher_shares", "dispatcher_patient_accounts"),
    "link_issuer": ("link_issuer_links",),
    "notifier": ("notifier_notifications",),
    AUDIT: (
        "audit_records",
        "audit_chain_heads",
        "audit_pending",
        "audit_checkpoints",
        "audit_purges",
        "audit_retention",
        "audit_legal_holds",
    ),
    "blume_publisher": ("blume_patient_accounts", "blume_record_entries"),
    "access_gateway": (
        "access_gateway_otp_challenges",
        "access_gateway_link_grants",
        "access_gateway_links",
        "access_gateway_revocations",
        "access_gateway_accounts",
        "access_gateway_entries",
    ),
}
SCHEMAS: Final = tuple(TABLES)
RUNTIME_TABLES: Final = ("runtime_inbox", "runtime_outbox")

AUDIT_OWNER: Final = "blume_audit_owner"
AUDIT_WRITER: Final = "blume_app"
AUDIT_PURGER: Final = "blume_audit_purger"
AUDIT_FUNCTIONS: Final = (
    "audit_refuse_change()",
    "audit_records_guard_delete()",
    "audit_heads_guard_update()",
    "audit_purge_through(text, bigint)",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    prefix = migration_role_prefix()
    # Before anything is created, so the new tables do not get them.
    op.execute(
        f"ALTER DEFAULT PRIVILEGES REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES "
        f"FROM {AUDIT_WRITER}"
    )
    op.execute(f"ALTER DEFAULT PRIVILEGES REVOKE USAGE, SELECT ON SEQUENCES FROM {AUDIT_WRITER}")
    for schema, tables in TABLES.items():
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        op.execute(f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC")
        for table in tables:
            op.execute(f"ALTER TABLE public.{table} SET SCHEMA {schema}")
        _create_runtime_tables(schema)
    _move_runtime_rows()
    _move_audit_functions()
    for schema in SCHEMAS:
        _service_role(schema, f"{prefix}{schema}")
    _narrow_audit_roles(f"{prefix}{AUDIT}")
    search_path = ", ".join(('"$user"', "public", *SCHEMAS))
    op.execute(
        f"""DO $$ BEGIN
            EXECUTE format('ALTER DATABASE %I SET search_path = {search_path}',
                           current_database());
        END $$"""
    )


def _create_runtime_tables(schema: str) -> None:
    op.create_table(
        "runtime_inbox",
        sa.Column("consumer", sa.String(length=64), nullable=False),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=256), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_source", "event_id"),
        schema=schema,
    )
    op.create_table(
        "runtime_outbox",
        sa.Column("event_id", sa.String(length=256), nullable=False),
        sa.Column("routing_key", sa.String(length=128), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
        schema=schema,
    )
    op.create_index("ix_runtime_outbox_created_at", "runtime_outbox", ["created_at"], schema=schema)


_OUTBOX_PRODUCER: Final = "split_part(convert_from(body, 'UTF8')::jsonb ->> 'source', '/', 3)"


def _move_runtime_rows() -> None:
    known = ", ".join(f"'{schema}'" for schema in SCHEMAS)
    op.execute(
        f"""DO $$ BEGIN
            IF EXISTS (SELECT 1 FROM public.runtime_outbox
                       WHERE {_OUTBOX_PRODUCER} NOT IN ({known})) THEN
                RAISE EXCEPTION 'runtime_outbox holds events of no service: stop the '
                    'services, let the outbox drain, then migrate';
            END IF;
        END $$"""
    )
    for schema in SCHEMAS:
        op.execute(
            f"INSERT INTO {schema}.runtime_inbox SELECT * FROM public.runtime_inbox "
            f"WHERE consumer = '{schema}'"
        )
        op.execute(
            f"INSERT INTO {schema}.runtime_outbox SELECT * FROM public.runtime_outbox "
            f"WHERE {_OUTBOX_PRODUCER} = '{schema}'"
        )
    for table in RUNTIME_TABLES:
        op.execute(f"DROP TABLE public.{table}")


def _move_audit_functions() -> None:
    for function in AUDIT_FUNCTIONS:
        op.execute(f"ALTER FUNCTION public.{function} SET SCHEMA {AUDIT}")
        # Their bodies name the audit tables unqualified: resolve them in the audit schema
        # whatever the caller's search_path.
        op.execute(f"ALTER FUNCTION {AUDIT}.{function} SET search_path = {AUDIT}, pg_temp")


def _create_role(role: str) -> None:
    # Roles are cluster-wide: create only if missing, and let a concurrent migration of
    # another database in the same cluster win the race without failing this one.
    op.execute(
        f"""DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE {role} NOLOGIN;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$"""
    )


def _service_role(schema: str, role: str) -> None:
    _create_role(role)
    op.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
    op.execute(f"GRANT SELECT ON public.alembic_version TO {role}")  # the start-up check
    if schema == AUDIT:
        tables = ", ".join(f"{AUDIT}.{table}" for table in RUNTIME_TABLES)
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {role}")
        return
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}")
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}"
    )
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {role}"
    )


def _narrow_audit_roles(audit_service_role: str) -> None:
    for schema in SCHEMAS:
        if schema != AUDIT:
            op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {AUDIT_WRITER}")
            op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {AUDIT_WRITER}")
    for role in (AUDIT_OWNER, AUDIT_WRITER, AUDIT_PURGER):
        op.execute(f"GRANT USAGE ON SCHEMA {AUDIT} TO {role}")
    runtime = ", ".join(f"{AUDIT}.{table}" for table in RUNTIME_TABLES)
    for writer in (AUDIT_WRITER, audit_service_role):
        op.execute(
            f"GRANT SELECT, INSERT ON {AUDIT}.audit_records, {AUDIT}.audit_checkpoints TO {writer}"
        )
        op.execute(f"GRANT SELECT, INSERT, UPDATE ON {AUDIT}.audit_chain_heads TO {writer}")
        # UPDATE only so the sealer may lock staged rows (SELECT ... FOR UPDATE SKIP LOCKED).
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {AUDIT}.audit_pending TO {writer}")
        op.execute(f"GRANT USAGE, SELECT ON SEQUENCE {AUDIT}.audit_pending_id_seq TO {writer}")
        op.execute(
            f"GRANT SELECT ON {AUDIT}.audit_purges, {AUDIT}.audit_retention, "
            f"{AUDIT}.audit_legal_holds TO {writer}"
        )
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {runtime} TO {writer}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET search_path', "
        "current_database()); END $$"
    )
    for function in AUDIT_FUNCTIONS:
        op.execute(f"ALTER FUNCTION {AUDIT}.{function} RESET search_path")
        op.execute(f"ALTER FUNCTION {AUDIT}.{function} SET SCHEMA public")
    op.execute(
        "ALTER FUNCTION public.audit_purge_through(text, bigint) SET search_path = public, pg_temp"
    )
    prefix = migration_role_prefix()
    for schema in SCHEMAS:
        # A table keeps its grants when it changes schema: the service's role must not keep
        # its rights on the tables that go back to public.
        op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {prefix}{schema}")
        op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {prefix}{schema}")
    first = SCHEMAS[0]
    for table in RUNTIME_TABLES:
        op.execute(f"ALTER TABLE {first}.{table} SET SCHEMA public")
    for schema, tables in TABLES.items():
        for table in tables:
            op.execute(f"ALTER TABLE {schema}.{table} SET SCHEMA public")
        if schema == first:
            continue
        for table in RUNTIME_TABLES:
            op.execute(f"INSERT INTO public.{table} SELECT * FROM {schema}.{table}")
            op.execute(f"DROP TABLE {schema}.{table}")
    # The roles stay (cluster-wide; other databases may use them); their grants here go.
    for schema in SCHEMAS:
        op.execute(f"DROP SCHEMA {schema} CASCADE")
        op.execute(f"REVOKE ALL ON public.alembic_version FROM {prefix}{schema}")
    workers_tables = [
        *(table for schema, names in TABLES.items() if schema != AUDIT for table in names),
        *RUNTIME_TABLES,
    ]
    granted = ", ".join(f"public.{table}" for table in workers_tables)
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {granted} TO {AUDIT_WRITER}")
    op.execute(
        f"ALTER DEFAULT PRIVILEGES GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {AUDIT_WRITER}"
    )
    op.execute(f"ALTER DEFAULT PRIVILEGES GRANT USAGE, SELECT ON SEQUENCES TO {AUDIT_WRITER}")
