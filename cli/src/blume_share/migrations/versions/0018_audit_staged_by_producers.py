"""audit staging by producers: each service stages its own events' audit rows in the
transaction that emits them; the database records who staged each row

``audit_pending`` gains ``staged_by``: on PostgreSQL it defaults to ``current_user`` and no
service but the audit sink may set it, so the database, not the producer, says who staged a
row; the sealer checks that role against the event's claimed producer
(``blume_audit_sink.sealer``). Rows staged before this migration were the audit sink's own.
The staging key becomes (source, id, staged_by): a row staged under another service's name
cannot keep that service's genuine row out (the sealer records the intruder as a security
event and seals the genuine one).

On PostgreSQL, the documented exception to schema-per-service: every service role other than
the audit sink's gets USAGE on the audit schema, INSERT on the staging table's four entry
columns (not ``staged_by``, not ``id``) and USAGE on its id sequence, and nothing else there.
It cannot read, change or delete a staged row, its own included. ``audit_staging_roles``
records which role stages for which service (``<prefix><service>``, and ``blume_app`` for
the audit sink), so the sealer needs no setting to tell them apart. A statement-level trigger
notifies ``blume_audit_staged`` as the staging commits, so the sealer of another process wakes
at once (``LISTEN``).

On SQLite (the embedded default, one process and no roles) ``staged_by`` is the empty string
and ``audit_staging_roles`` stays empty.

Revision ID: 0018
Revises: 0017
"""

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from alembic import op
from blume_share.schema import migration_role_prefix

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUDIT: Final = "audit_sink"
PRODUCERS: Final = (
    "share_dispatcher",
    "link_issuer",
    "notifier",
    "blume_publisher",
    "access_gateway",
)
"""The service roles of migration 0011 other than the audit sink's."""
AUDIT_WRITER: Final = "blume_app"
"""The audit writer of migration 0002: it stages as the audit sink does."""
ENTRY_COLUMNS: Final = "event_source, event_id, received_at, entry"
CHANNEL: Final = "blume_audit_staged"


def _create_staging_roles(schema: str | None) -> None:
    op.create_table(
        "audit_staging_roles",
        sa.Column("role_name", sa.String(length=128), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("role_name"),
        schema=schema,
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        _create_staging_roles(None)
        with op.batch_alter_table("audit_pending") as table:
            table.add_column(
                sa.Column("staged_by", sa.String(length=64), nullable=False, server_default="")
            )
            table.drop_constraint("uq_audit_pending_event", type_="unique")
            table.create_unique_constraint(
                "uq_audit_pending_event", ["event_source", "event_id", "staged_by"]
            )
        return
    prefix = migration_role_prefix()
    op.execute(
        f"ALTER TABLE {AUDIT}.audit_pending ADD COLUMN staged_by varchar(64) NOT NULL "
        f"DEFAULT '{prefix}{AUDIT}'"
    )
    op.execute(f"ALTER TABLE {AUDIT}.audit_pending ALTER COLUMN staged_by SET DEFAULT current_user")
    op.execute(f"ALTER TABLE {AUDIT}.audit_pending DROP CONSTRAINT uq_audit_pending_event")
    op.execute(
        f"ALTER TABLE {AUDIT}.audit_pending ADD CONSTRAINT uq_audit_pending_event "
        f"UNIQUE (event_source, event_id, staged_by)"
    )
    for service in PRODUCERS:
        role = f"{prefix}{service}"
        op.execute(f"GRANT USAGE ON SCHEMA {AUDIT} TO {role}")
        op.execute(f"GRANT INSERT ({ENTRY_COLUMNS}) ON {AUDIT}.audit_pending TO {role}")
        op.execute(f"GRANT USAGE ON SEQUENCE {AUDIT}.audit_pending_id_seq TO {role}")
    # Which role stages for which service, as the migrator named them: the sealer's source.
    _create_staging_roles(AUDIT)
    roles = [(f"{prefix}{service}", service) for service in (*PRODUCERS, AUDIT)]
    roles.append((AUDIT_WRITER, AUDIT))
    op.execute(
        f"INSERT INTO {AUDIT}.audit_staging_roles (role_name, service) VALUES "
        + ", ".join(f"('{role}', '{service}')" for role, service in roles)
    )
    for reader in (f"{prefix}{AUDIT}", AUDIT_WRITER):
        op.execute(f"GRANT SELECT ON {AUDIT}.audit_staging_roles TO {reader}")
    op.execute(
        f"""CREATE FUNCTION {AUDIT}.audit_staged_notify() RETURNS trigger
            LANGUAGE plpgsql SET search_path = {AUDIT}, pg_temp AS $$
            BEGIN
                PERFORM pg_notify('{CHANNEL}', '');
                RETURN NULL;
            END $$"""
    )
    op.execute(
        f"CREATE TRIGGER audit_pending_staged AFTER INSERT ON {AUDIT}.audit_pending "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {AUDIT}.audit_staged_notify()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.drop_table("audit_staging_roles")
        with op.batch_alter_table("audit_pending") as table:
            table.drop_constraint("uq_audit_pending_event", type_="unique")
            table.create_unique_constraint("uq_audit_pending_event", ["event_source", "event_id"])
            table.drop_column("staged_by")
        return
    prefix = migration_role_prefix()
    op.drop_table("audit_staging_roles", schema=AUDIT)
    op.execute(f"DROP TRIGGER audit_pending_staged ON {AUDIT}.audit_pending")
    op.execute(f"DROP FUNCTION {AUDIT}.audit_staged_notify()")
    for service in PRODUCERS:
        role = f"{prefix}{service}"
        op.execute(f"REVOKE ALL ON SEQUENCE {AUDIT}.audit_pending_id_seq FROM {role}")
        op.execute(f"REVOKE ALL ON {AUDIT}.audit_pending FROM {role}")
        op.execute(f"REVOKE USAGE ON SCHEMA {AUDIT} FROM {role}")
    # One row per event again: the first staged.
    op.execute(
        f"""DELETE FROM {AUDIT}.audit_pending AS staged USING {AUDIT}.audit_pending AS other
            WHERE staged.event_source = other.event_source AND staged.event_id = other.event_id
              AND staged.id > other.id"""
    )
    op.execute(f"ALTER TABLE {AUDIT}.audit_pending DROP CONSTRAINT uq_audit_pending_event")
    op.execute(
        f"ALTER TABLE {AUDIT}.audit_pending ADD CONSTRAINT uq_audit_pending_event "
        f"UNIQUE (event_source, event_id)"
    )
    op.execute(f"ALTER TABLE {AUDIT}.audit_pending DROP COLUMN staged_by")
