"""The database schema: every service's tables, applied with Alembic."""

from __future__ import annotations

from blume_runtime.db import database_url
from sqlalchemy import create_engine
from sqlmodel import SQLModel


def load_models() -> type[SQLModel]:
    """Import every module that defines tables, so ``SQLModel.metadata`` is complete."""
    import blume_share_dispatcher.models  # noqa: F401

    return SQLModel


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the latest schema.

    Interim: creates the tables from the models; replaced by ``alembic upgrade head``.
    """
    load_models()
    engine = create_engine(database_url(url, use_async=False))
    try:
        SQLModel.metadata.create_all(engine)
    finally:
        engine.dispose()
