"""Workers for the bad-input tests: one migrated database per module and backend.

The corpus is fed case by case through the same worker, so the database and the workers
live as long as the module (every case has its own event id: none dedupes another).
SQLite is the embedded default; PostgreSQL is production, and the one that enforces
column lengths (defect 4).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import structlog
from blume_audit_sink.service import build as build_audit_sink
from blume_runtime.db import Database
from blume_runtime.logging import configure_logging
from blume_share.schema import upgrade
from blume_share_dispatcher.service import build as build_dispatcher
from pydantic import SecretStr

from conftest import fresh_database
from tests.bad_input.harness import WorkerUnderTest, identity_settings


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)],
)
def backend_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database of each backend, for the whole module."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('bad-input') / 'blume.db'}"
        upgrade(url)
        yield url
        return
    admin_url: str = request.getfixturevalue("postgres_admin_url")
    with fresh_database(admin_url) as url:
        upgrade(url)
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def database(backend_url: str) -> AsyncIterator[Database]:
    db = Database(backend_url, stages_audit=True)  # one database, as deployed
    yield db
    await db.dispose()


@pytest.fixture(scope="module")
def json_logs() -> Iterator[None]:
    """JSON log lines, as in production; structlog's defaults restored afterwards."""
    configure_logging("INFO", "json")
    yield
    structlog.reset_defaults()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def dispatcher(
    database: Database, tmp_path_factory: pytest.TempPathFactory, json_logs: None
) -> WorkerUnderTest:
    settings = identity_settings(state_dir=tmp_path_factory.mktemp("dispatcher"))
    return WorkerUnderTest(build_dispatcher(settings), database, settings)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def audit_sink(
    database: Database, tmp_path_factory: pytest.TempPathFactory, json_logs: None
) -> AsyncIterator[WorkerUnderTest]:
    state: Path = tmp_path_factory.mktemp("audit")
    settings = identity_settings(state_dir=state, database_url=SecretStr(database.url))
    service = build_audit_sink(settings)
    yield WorkerUnderTest(service, database, settings)
    for component in service.components:
        await component.stop()
