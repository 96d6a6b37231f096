"""Alembic environment: one migration history for every service's tables."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from blume_share.schema import load_models

target_metadata = load_models().metadata


def run_migrations() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
