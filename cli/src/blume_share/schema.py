"""The database schema: every service's tables, applied with Alembic."""

from __future__ import annotations

import importlib
from typing import Final

from alembic import command
from alembic.config import Config
from blume_runtime.db import database_url
from sqlmodel import SQLModel

MODEL_MODULES: Final = (
    "blume_runtime.db",
    "blume_share_dispatcher.models",
    "blume_share_dispatcher.accounts",
    "blume_link_issuer.models",
    "blume_notifier.models",
    "blume_audit_sink.models",
    "blume_publisher.models",
    "blume_access_gateway.models",
)


def load_models() -> type[SQLModel]:
    """Import every module that defines tables, so ``SQLModel.metadata`` is complete."""
    for module in MODEL_MODULES:
        importlib.import_module(module)
    return SQLModel


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "blume_share:migrations")
    # ConfigParser interpolation would eat a '%' in a password.
    config.set_main_option("sqlalchemy.url", database_url(url, use_async=False).replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the latest schema (idempotent)."""
    command.upgrade(alembic_config(url), "head")


def current(url: str) -> str | None:
    """The revision the database is at, or None if it has never been migrated."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(database_url(url, use_async=False))
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    """The newest revision this release ships."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
