"""Structured logs: JSON outside a terminal, one context per message, PHI and secrets removed.

The redaction keys come from the contract markings (``x-sensitivity``), so a field marked
in a model is redacted from every log line, whatever logged it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from datetime import date, datetime
from typing import Any, Final, TextIO, cast

import structlog
from blume_contracts.registry import SENSITIVE_FIELDS

REDACTED: Final = "[redacted]"
_ALWAYS_SECRET: Final = frozenset(
    {"token", "password", "authorization", "secret", "sealed_link", "body", "data"}
)
_REDACT_KEYS: Final = frozenset(SENSITIVE_FIELDS) | _ALWAYS_SECRET
_PATTERNS: Final = (
    (re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+"), "[email]"),
    (re.compile(r"/s/[A-Za-z0-9_-]{20,}"), "/s/[token]"),
    (re.compile(r"://[^/@\s:]+:[^/@\s]+@"), "://[credentials]@"),
)


def scrub_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {
            key: REDACTED if key in _REDACT_KEYS else _scrub(item) for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Remove marked keys and scrub addresses, link tokens and URL credentials from values."""
    for key in list(event_dict):
        if key in _REDACT_KEYS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written (test runners and daemons swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _json_default(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime | date) else str(value)


def configure_logging(level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Log at ``level`` to ``stream``; by default to whatever ``sys.stderr`` is at each line."""
    terminal = (sys.stderr if stream is None else stream).isatty()
    as_json = fmt == "json" or (fmt == "auto" and not terminal)
    renderer: Any = (
        structlog.processors.JSONRenderer(default=_json_default)
        if as_json
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(
            file=cast(TextIO, _CurrentStderr()) if stream is None else stream
        ),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
