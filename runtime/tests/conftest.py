"""Fixtures of the runtime's own tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog
from blume_runtime.logging import configure_logging

from runtime.tests.pipeline_support import JsonLines


@pytest.fixture
def json_lines(capsys: pytest.CaptureFixture[str]) -> Iterator[JsonLines]:
    """Production logging (JSON) for the test; the defaults are restored afterwards."""
    configure_logging("INFO", "json")
    capsys.readouterr()
    try:
        yield JsonLines(capsys)
    finally:
        structlog.reset_defaults()
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h.get_name() == "blume-structlog"]:
            root.removeHandler(handler)
