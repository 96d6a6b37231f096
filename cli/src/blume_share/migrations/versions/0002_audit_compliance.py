"""audit compliance: immutable audit tables, roles, checkpoints, retention and legal holds

On PostgreSQL:
- three roles, created once per cluster if missing (NOLOGIN: ops grant them to logins):
  ``blume_audit_owner`` owns the audit tables; ``blume_app`` (the workers) may only INSERT and
  SELECT audit records and checkpoints, move chain heads forward and use the staging table;
  ``blume_audit_purger`` may only call ``audit_purge_through``, which removes whole sealed
  segments past retention and not under legal hold.
- triggers refuse UPDATE, DELETE and TRUNCATE on the audit tables for every role, owner
  and superuser included (only ``session_replication_role = replica`` or disabling the
  triggers, both superuser acts, get past them: the hash chain and the signed checkpoints
  are what catch those). The one DELETE allowed is of rows a recorded purge covers.
- TRUNCATE, UPDATE and DELETE are not granted on them to anyone but the owner.

On SQLite (the embedded default) there are no roles; the same triggers use RAISE(ABORT).

Careful in later migrations: Alembic's batch mode on SQLite rebuilds a table and drops its
triggers. Alter audit tables with plain operations, or recreate the triggers.

Over 400 lines on purpose: the tables, roles, grants and triggers protect each other and
must land in one revision (half of them would leave the store writable), and a released
migration is history that is never edited or split.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 05:10:00.000000
"""

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWNER: Final = "blume_audit_owner"
APP: Final = "blume_app"
PURGER: Final = "blume_audit_purger"
ROLES: Final = (OWNER, APP, PURGER)

SEVEN_YEARS_DAYS: Final = 7 * 365 + 2  # blume_audit_sink.models.SEVEN_YEARS_DAYS

NEW_RECORD_COLUMNS: Final = (
    "hash_version",
    "event_code",
    "action",
    "outcome",
    "patient_mrn",
    "sender_user_id",
    "recipient_email",
    "agents",
)
INDEXED_RECORD_COLUMNS: Final = ("patient_mrn", "sender_user_id", "recipient_email")
# Rows never change once written; the head only moves forward; purge removes whole segments.
APPEND_ONLY: Final = (
    "audit_checkpoints",
    "audit_purges",
    "audit_retention",
    "audit_legal_holds",
)
AUDIT_TABLES: Final = (
    "audit_records",
    "audit_chain_heads",
    "audit_pending",
    *APPEND_ONLY,
)


def upgrade() -> None:
    _extend_records()
    _lead_the_event_key_with_its_id()
    _create_tables()
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_guards()
        _postgresql_roles()
    else:
        _sqlite_guards()


def _extend_records() -> None:
    # Rows written before this revision keep hash version 1: their hash covers the old columns.
    op.add_column(
        "audit_records",
        sa.Column("hash_version", sa.SmallInteger(), nullable=False, server_default="1"),
    )
    op.add_column("audit_records", sa.Column("event_code", sa.String(length=200), nullable=True))
    op.add_column("audit_records", sa.Column("action", sa.String(length=1), nullable=True))
    op.add_column("audit_records", sa.Column("outcome", sa.String(length=2), nullable=True))
    for name in INDEXED_RECORD_COLUMNS:
        op.add_column("audit_records", sa.Column(name, sa.String(length=256), nullable=True))
        op.create_index(f"ix_audit_records_{name}", "audit_records", [name], unique=False)
    op.add_column("audit_records", sa.Column("agents", sa.Text(), nullable=True))


def _lead_the_event_key_with_its_id() -> None:
    """(event_id, event_source): the duplicate check asks for a batch of ids at once, which
    with the source first (one value for most rows) became a scan of the whole table."""
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("uq_audit_records_event", "audit_records", type_="unique")
        op.create_unique_constraint(
            "uq_audit_records_event", "audit_records", ["event_id", "event_source"]
        )
        return
    # SQLite rebuilds the table for this; the triggers are created after it.
    with op.batch_alter_table("audit_records") as batch:
        batch.drop_constraint("uq_audit_records_event", type_="unique")
        batch.create_unique_constraint("uq_audit_records_event", ["event_id", "event_source"])


def _create_tables() -> None:
    op.create_table(
        "audit_pending",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_source", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=256), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_source", "event_id", name="uq_audit_pending_event"),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("chain_id", sa.String(length=256), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("previous_digest", sa.String(length=64), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "seq"),
    )
    op.create_table(
        "audit_purges",
        sa.Column("chain_id", sa.String(length=256), nullable=False),
        sa.Column("through_seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("through_hash", sa.String(length=64), nullable=False),
        sa.Column("purged_rows", sa.BigInteger(), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("purged_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "through_seq"),
    )
    op.create_table(
        "audit_retention",
        sa.Column("chain_id", sa.String(length=256), nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("set_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "effective_at"),
    )
    op.create_table(
        "audit_legal_holds",
        sa.Column("hold_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("chain_id", sa.String(length=256), nullable=False),
        sa.Column("patient_mrn", sa.String(length=256), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("hold_id", "action"),
    )
    op.create_index("ix_audit_legal_holds_chain_id", "audit_legal_holds", ["chain_id"])


# --------------------------------------------------------------------------- PostgreSQL

_PG_FUNCTIONS: Final = """
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE OR REPLACE FUNCTION audit_records_guard_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM audit_purges p
        WHERE p.chain_id = OLD.chain_id AND p.through_seq >= OLD.seq
    ) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_records is append-only: DELETE refused (only a purge removes rows)'
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE OR REPLACE FUNCTION audit_heads_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.chain_id <> OLD.chain_id OR NEW.seq <= OLD.seq THEN
        RAISE EXCEPTION 'audit chain heads only move forward'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM audit_records r
        WHERE r.chain_id = NEW.chain_id AND r.seq = NEW.seq AND r.hash = NEW.hash
    ) THEN
        RAISE EXCEPTION 'an audit chain head must point at the record it ends on'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
"""

_PG_PURGE_FUNCTION: Final = """
CREATE OR REPLACE FUNCTION audit_purge_through(p_chain_id text, p_through_seq bigint)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    v_hash text;
    v_anchor bigint;
    v_days integer;
    v_rows bigint;
BEGIN
    SELECT head_hash INTO v_hash FROM audit_checkpoints
        WHERE chain_id = p_chain_id AND seq = p_through_seq;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no checkpoint seals seq % of this chain', p_through_seq;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM audit_records
        WHERE chain_id = p_chain_id AND seq = p_through_seq AND hash = v_hash
    ) THEN
        RAISE EXCEPTION 'the record at seq % does not match its checkpoint', p_through_seq;
    END IF;
    SELECT COALESCE(max(through_seq), 0) INTO v_anchor FROM audit_purges
        WHERE chain_id = p_chain_id;
    IF p_through_seq <= v_anchor THEN
        RAISE EXCEPTION 'already purged through seq %', v_anchor;
    END IF;
    SELECT retention_days INTO v_days FROM audit_retention
        WHERE chain_id = p_chain_id ORDER BY effective_at DESC LIMIT 1;
    IF NOT FOUND THEN
        v_days := {default_days};
    END IF;
    IF EXISTS (
        SELECT 1 FROM audit_records
        WHERE chain_id = p_chain_id AND seq > v_anchor AND seq <= p_through_seq
          AND recorded_at >= now() - make_interval(days => v_days)
    ) THEN
        RAISE EXCEPTION 'records up to seq % are not all past the % days of retention',
            p_through_seq, v_days;
    END IF;
    IF EXISTS (
        SELECT 1 FROM audit_legal_holds h
        WHERE h.chain_id = p_chain_id AND h.action = 'place'
          AND NOT EXISTS (
              SELECT 1 FROM audit_legal_holds r
              WHERE r.hold_id = h.hold_id AND r.action = 'release')
          AND (h.patient_mrn IS NULL OR EXISTS (
              SELECT 1 FROM audit_records a
              WHERE a.chain_id = p_chain_id AND a.seq > v_anchor AND a.seq <= p_through_seq
                AND a.patient_mrn = h.patient_mrn))
    ) THEN
        RAISE EXCEPTION 'a legal hold covers records up to seq %', p_through_seq;
    END IF;
    SELECT count(*) INTO v_rows FROM audit_records
        WHERE chain_id = p_chain_id AND seq > v_anchor AND seq <= p_through_seq;
    -- The purge row first: the delete trigger lets through only rows a purge covers.
    INSERT INTO audit_purges
        (chain_id, through_seq, through_hash, purged_rows, purged_at, purged_by)
        VALUES (p_chain_id, p_through_seq, v_hash, v_rows, now(), left(session_user::text, 128));
    DELETE FROM audit_records
        WHERE chain_id = p_chain_id AND seq > v_anchor AND seq <= p_through_seq;
    RETURN v_rows;
END $$;
"""


def _pg_trigger(table: str, name: str, timing: str, function: str, *, per_row: bool) -> None:
    level = "ROW" if per_row else "STATEMENT"
    op.execute(
        f"CREATE TRIGGER {name} {timing} ON {table} FOR EACH {level} EXECUTE FUNCTION {function}()"
    )


def _postgresql_guards() -> None:
    op.execute(_PG_FUNCTIONS)
    _pg_trigger(
        "audit_records",
        "audit_records_no_update",
        "BEFORE UPDATE",
        "audit_refuse_change",
        per_row=True,
    )
    _pg_trigger(
        "audit_records",
        "audit_records_guard_delete",
        "BEFORE DELETE",
        "audit_records_guard_delete",
        per_row=True,
    )
    _pg_trigger(
        "audit_chain_heads",
        "audit_chain_heads_forward",
        "BEFORE UPDATE",
        "audit_heads_guard_update",
        per_row=True,
    )
    _pg_trigger(
        "audit_chain_heads",
        "audit_chain_heads_no_delete",
        "BEFORE DELETE",
        "audit_refuse_change",
        per_row=True,
    )
    for table in APPEND_ONLY:
        _pg_trigger(
            table,
            f"{table}_no_change",
            "BEFORE UPDATE OR DELETE",
            "audit_refuse_change",
            per_row=True,
        )
    for table in ("audit_records", "audit_chain_heads", *APPEND_ONLY):
        _pg_trigger(
            table,
            f"{table}_no_truncate",
            "BEFORE TRUNCATE",
            "audit_refuse_change",
            per_row=False,
        )
    schema = op.get_bind().execute(sa.text("SELECT current_schema()")).scalar_one()
    op.execute(_PG_PURGE_FUNCTION.format(schema=f'"{schema}"', default_days=SEVEN_YEARS_DAYS))


def _postgresql_roles() -> None:
    # Roles are cluster-wide: create each only if missing, and let a concurrent migration of
    # another database in the same cluster win the race without failing this one.
    for role in ROLES:
        op.execute(
            f"""
            DO $$ BEGIN
                IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{role}') THEN
                    CREATE ROLE {role} NOLOGIN;
                END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
            END $$;
            """
        )
    tables = ", ".join(AUDIT_TABLES)
    for table in AUDIT_TABLES:
        op.execute(f"ALTER TABLE {table} OWNER TO {OWNER}")
    op.execute(f"ALTER FUNCTION audit_purge_through(text, bigint) OWNER TO {OWNER}")
    op.execute(f"REVOKE ALL ON {tables} FROM PUBLIC")
    op.execute("REVOKE ALL ON FUNCTION audit_purge_through(text, bigint) FROM PUBLIC")
    op.execute(f"REVOKE TRUNCATE ON {tables} FROM {OWNER}")

    op.execute(f"GRANT SELECT, INSERT ON audit_records, audit_checkpoints TO {APP}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON audit_chain_heads TO {APP}")
    # UPDATE only so the sealer may lock staged rows (SELECT ... FOR UPDATE SKIP LOCKED).
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON audit_pending TO {APP}")
    op.execute(f"GRANT USAGE, SELECT ON SEQUENCE audit_pending_id_seq TO {APP}")
    op.execute(f"GRANT SELECT ON audit_purges, audit_retention, audit_legal_holds TO {APP}")
    op.execute(f"GRANT SELECT ON {tables} TO {PURGER}")
    op.execute(f"GRANT EXECUTE ON FUNCTION audit_purge_through(text, bigint) TO {PURGER}")

    # The workers' own tables, now and in later migrations run by the same role.
    op.execute(
        f"""
        DO $$ DECLARE t text; BEGIN
            FOR t IN SELECT tablename FROM pg_catalog.pg_tables
                     WHERE schemaname = current_schema()
                       AND tablename NOT LIKE 'audit\\_%' AND tablename <> 'alembic_version'
            LOOP
                EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO {APP}', t);
            END LOOP;
        END $$;
        """
    )
    op.execute(f"GRANT SELECT ON alembic_version TO {APP}")
    op.execute(f"ALTER DEFAULT PRIVILEGES GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {APP}")
    op.execute(f"ALTER DEFAULT PRIVILEGES GRANT USAGE, SELECT ON SEQUENCES TO {APP}")


# ------------------------------------------------------------------------------- SQLite


def _sqlite_refuse(table: str, name: str, timing: str, when: str = "") -> None:
    condition = f" WHEN {when}" if when else ""
    operation = timing.rsplit(maxsplit=1)[-1]
    op.execute(
        f"CREATE TRIGGER {name} {timing} ON {table}{condition} BEGIN "
        f"SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); END"
    )


def _sqlite_guards() -> None:
    _sqlite_refuse("audit_records", "audit_records_no_update", "BEFORE UPDATE")
    _sqlite_refuse(
        "audit_records",
        "audit_records_guard_delete",
        "BEFORE DELETE",
        "NOT EXISTS (SELECT 1 FROM audit_purges p "
        "WHERE p.chain_id = OLD.chain_id AND p.through_seq >= OLD.seq)",
    )
    _sqlite_refuse(
        "audit_chain_heads",
        "audit_chain_heads_forward",
        "BEFORE UPDATE",
        "NEW.chain_id <> OLD.chain_id OR NEW.seq <= OLD.seq OR NOT EXISTS ("
        "SELECT 1 FROM audit_records r "
        "WHERE r.chain_id = NEW.chain_id AND r.seq = NEW.seq AND r.hash = NEW.hash)",
    )
    _sqlite_refuse("audit_chain_heads", "audit_chain_heads_no_delete", "BEFORE DELETE")
    for table in APPEND_ONLY:
        _sqlite_refuse(table, f"{table}_no_update", "BEFORE UPDATE")
        _sqlite_refuse(table, f"{table}_no_delete", "BEFORE DELETE")


# -------------------------------------------------------------------------------- down


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS audit_purge_through(text, bigint)")
        for table in ("audit_records", "audit_chain_heads"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP TRIGGER IF EXISTS audit_records_no_update ON audit_records")
        op.execute("DROP TRIGGER IF EXISTS audit_records_guard_delete ON audit_records")
        op.execute("DROP TRIGGER IF EXISTS audit_chain_heads_forward ON audit_chain_heads")
        op.execute("DROP TRIGGER IF EXISTS audit_chain_heads_no_delete ON audit_chain_heads")
    else:
        for name in (
            "audit_records_no_update",
            "audit_records_guard_delete",
            "audit_chain_heads_forward",
            "audit_chain_heads_no_delete",
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_index("ix_audit_legal_holds_chain_id", table_name="audit_legal_holds")
    for table in ("audit_pending", *APPEND_ONLY):
        op.drop_table(table)
    for name in INDEXED_RECORD_COLUMNS:
        op.drop_index(f"ix_audit_records_{name}", table_name="audit_records")
    # Roles stay: they are cluster-wide and other databases may use them.
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS audit_refuse_change() CASCADE")
        op.execute("DROP FUNCTION IF EXISTS audit_records_guard_delete() CASCADE")
        op.execute("DROP FUNCTION IF EXISTS audit_heads_guard_update() CASCADE")
        for name in NEW_RECORD_COLUMNS:
            op.drop_column("audit_records", name)
    else:
        with op.batch_alter_table("audit_records") as batch:
            for name in NEW_RECORD_COLUMNS:
                batch.drop_column(name)
