"""The gateway's link and entry projections keep the shared study's UID, the one study the
image proxy lets that link or entry reach (``share.link.issued`` / ``share.blume.published``
carry it from now on). Existing rows are filled from the link issuer's and the record
store's own tables, as migration 0009 filled the projections.

On PostgreSQL the tables are in their services' schemas (migration 0011).

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("access_gateway_links", "access_gateway_entries")


def _schemas() -> tuple[str | None, str, str]:
    """The gateway's schema (None on SQLite) and the qualified sources of the backfill."""
    if op.get_bind().dialect.name != "postgresql":
        return None, "link_issuer_links", "blume_record_entries"
    return (
        "access_gateway",
        "link_issuer.link_issuer_links",
        "blume_publisher.blume_record_entries",
    )


def upgrade() -> None:
    schema, links, entries = _schemas()
    prefix = f"{schema}." if schema else ""
    for table in _TABLES:
        with op.batch_alter_table(table, schema=schema) as batch:
            batch.add_column(sa.Column("study_instance_uid", sa.String(length=64), nullable=True))
    op.execute(
        f"UPDATE {prefix}access_gateway_links SET study_instance_uid = (SELECT"
        f" l.study_instance_uid FROM {links} l"
        f" WHERE l.link_id = {prefix}access_gateway_links.link_id)"
    )
    op.execute(
        f"UPDATE {prefix}access_gateway_entries SET study_instance_uid = (SELECT"
        f" e.study_instance_uid FROM {entries} e"
        f" WHERE e.entry_id = {prefix}access_gateway_entries.entry_id)"
    )


def downgrade() -> None:
    schema = _schemas()[0]
    for table in _TABLES:
        with op.batch_alter_table(table, schema=schema) as batch:
            batch.drop_column("study_instance_uid")
