"""The gateway's link and entry projections keep the shared study's UID, the one study the
image proxy lets that link or entry reach (``share.link.issued`` / ``share.blume.published``
carry it from now on). Existing rows are filled from the link issuer's and the record
store's own tables, as migration 0009 filled the projections.

Revision ID: 0013
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("access_gateway_links", "access_gateway_entries")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("study_instance_uid", sa.String(length=64), nullable=True))
    op.execute(
        "UPDATE access_gateway_links SET study_instance_uid = (SELECT l.study_instance_uid"
        " FROM link_issuer_links l WHERE l.link_id = access_gateway_links.link_id)"
    )
    op.execute(
        "UPDATE access_gateway_entries SET study_instance_uid = (SELECT e.study_instance_uid"
        " FROM blume_record_entries e WHERE e.entry_id = access_gateway_entries.entry_id)"
    )


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("study_instance_uid")
