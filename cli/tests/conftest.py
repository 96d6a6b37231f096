"""The embedded default for CLI tests: no broker, database or SMTP server configured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """Commands point structlog at a log file of their test; later tests must not log there."""
    saved: dict[str, Any] = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def cli(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The embedded default in a fresh state directory, logging JSON."""
    for name in ("AMQP_URL", "DATABASE_URL", "SMTP_URL", "TENANT_POLICY_FILE"):
        monkeypatch.delenv(f"BLUME_{name}", raising=False)
    monkeypatch.setenv("BLUME_STATE_DIR", str(state_dir))
    monkeypatch.setenv("BLUME_LOG_FORMAT", "json")
    return CliRunner()
