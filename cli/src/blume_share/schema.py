"""The database schema: every service's tables, applied with Alembic.

On PostgreSQL each service's tables, its inbox and outbox included, live in a schema named
after the service, used by a role of its own (``<prefix><service>``, migration 0011). The
tables come from what each service exports (``TABLES``); none is named here as a string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import blume_access_gateway as access_gateway
import blume_audit_sink as audit_sink
import blume_link_issuer as link_issuer
import blume_notifier as notifier
import blume_publisher as publisher
import blume_share_dispatcher as share_dispatcher
from alembic import command, context
from alembic.config import Config
from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from blume_runtime.db import RUNTIME_TABLES, database_url
from sqlalchemy import MetaData
from sqlmodel import SQLModel

SERVICE_TABLES: Final[Mapping[str, tuple[type[SQLModel], ...]]] = {
    share_dispatcher.NAME: share_dispatcher.TABLES,
    link_issuer.NAME: link_issuer.TABLES,
    notifier.NAME: notifier.TABLES,
    audit_sink.NAME: audit_sink.TABLES,
    publisher.NAME: publisher.TABLES,
    access_gateway.NAME: access_gateway.TABLES,
}
"""Each service (its schema's name) and its tables (its ``TABLES``); each has
``RUNTIME_TABLES`` besides. The migrations create them in that schema, and the schema check
compares them with the database."""

DEFAULT_ROLE_PREFIX: Final = "blume_"


def load_models() -> type[SQLModel]:
    """``SQLModel``, its metadata holding every table once, unqualified: SQLite's layout."""
    return SQLModel


def schema_metadata() -> MetaData:
    """PostgreSQL's layout: every service's tables and its own inbox and outbox, in its schema."""
    # SQLModel names an index after its column's label, which a schema would join: keep
    # the names the tables had before they moved (``ix_<table>_<column>``).
    target = MetaData(naming_convention={"ix": "ix_%(table_name)s_%(column_0_name)s"})
    for schema, models in SERVICE_TABLES.items():
        for model in (*RUNTIME_TABLES, *models):
            model.__table__.to_metadata(target, schema=schema)  # type: ignore[attr-defined]
    return target


def include_name(name: str | None, type_: NameFilterType, _parents: NameFilterParentNames) -> bool:
    """Compare only the services' schemas (and the default one, where alembic_version is)."""
    return type_ != "schema" or name is None or name in SERVICE_TABLES


def migrator_connect_args(url: str) -> dict[str, str | float]:
    """Migrations see ``public`` only, whatever the database's ``search_path`` (0011): an
    unqualified new table lands there (and the schema check sees it), and the service
    schemas are named explicitly. On SQLite they wait for the write lock as long as the
    runtime does (30 s, not sqlite3's default 5 s): the embedded default's workers and its
    gateway thread may hold it for a moment."""
    if url.startswith("postgresql"):
        return {"options": "-c search_path=public"}
    return {"timeout": 30.0} if url.startswith("sqlite") else {}


def migration_role_prefix() -> str:
    """The prefix of the service roles' names in the migration being run (``alembic_config``),
    lower-cased. The migrations put it into SQL, so anything but letters, digits and
    underscores, starting with a letter, at most 40 long, is refused."""
    prefix = str(context.config.attributes.get("role_prefix", DEFAULT_ROLE_PREFIX))
    if not prefix.replace("_", "").isalnum() or not prefix[:1].isalpha() or len(prefix) > 40:
        raise ValueError("the role prefix must be letters, digits and underscores")
    return prefix.lower()


def alembic_config(url: str, *, role_prefix: str = DEFAULT_ROLE_PREFIX) -> Config:
    config = Config()
    config.set_main_option("script_location", "blume_share:migrations")
    # ConfigParser interpolation would eat a '%' in a password.
    config.set_main_option("sqlalchemy.url", database_url(url, use_async=False).replace("%", "%%"))
    config.attributes["role_prefix"] = role_prefix
    config.attributes["service_schemas"] = tuple(SERVICE_TABLES)
    return config


def upgrade(url: str, *, role_prefix: str = DEFAULT_ROLE_PREFIX) -> None:
    """Bring the database at ``url`` to the latest schema (idempotent).

    ``url`` is the migrator's (the owner's); on PostgreSQL the services' roles are named
    ``<role_prefix><service>`` (``BLUME_DATABASE_ROLE_PREFIX``).
    """
    command.upgrade(alembic_config(url, role_prefix=role_prefix), "head")


def current(url: str) -> str | None:
    """The revision the database is at, or None if it has never been migrated."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    sync_url = database_url(url, use_async=False)
    engine = create_engine(sync_url, connect_args=migrator_connect_args(sync_url))
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    """The newest revision this release ships."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
