"""Fixtures of the runtime's own tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from blume_runtime.db import Database
from blume_runtime.logging import configure_logging, reset_logging

from runtime.tests.pipeline_support import JsonLines, runtime_tables


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A SQLite database with the runtime's inbox and outbox tables."""
    database = Database(f"sqlite:///{tmp_path / 'runtime.db'}")
    await runtime_tables(database)
    yield database
    await database.dispose()


@pytest.fixture
def json_lines(capsys: pytest.CaptureFixture[str]) -> Iterator[JsonLines]:
    """Production logging (JSON) for the test; the defaults are restored afterwards."""
    configure_logging("INFO", "json")
    capsys.readouterr()
    try:
        yield JsonLines(capsys)
    finally:
        reset_logging()
