"""Structured logs: JSON outside a terminal, one context per message, PHI and secrets removed.

The redaction keys come from the contract markings (``x-sensitivity``), so a field marked
in a model is redacted from every log line, whatever logged it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, Final, TextIO, cast

import structlog
from blume_contracts.registry import SENSITIVE_FIELDS
from opentelemetry import trace

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


def bounded(value: object, limit: int = 128) -> str | None:
    """An attacker-chosen value made safe to log: printable, at most ``limit`` characters.

    Control and other unprintable characters (newlines, escapes, bidi overrides) become
    ``?``; a longer value is cut and marked with ``…``. None stays None.
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit and text.isprintable():  # nearly always: nothing to replace
        return text
    cut = text[: limit + 1]
    safe = "".join(char if char.isprintable() else "?" for char in cut[:limit])
    return safe + "…" if len(cut) > limit else safe


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind ``fields`` to every log line in this block, then restore what they were.

    ``structlog.contextvars.bound_contextvars`` does the same by reading the whole context
    first; resetting the tokens of the variables set costs less, twice per delivery.
    """
    tokens = structlog.contextvars.bind_contextvars(**fields)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def scrub_text(text: str) -> str:
    # Each pattern needs an "@" or a "/s/": a text with neither (nearly every log field) is
    # left as it is without running them.
    if "@" not in text and "/s/" not in text:
        return text
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


def add_trace_ids(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: every line logged inside a span carries its ``trace_id``."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict.setdefault("trace_id", format(span_context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(span_context.span_id, "016x"))
    return event_dict


def redacted(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The log rules applied to span attributes: marked keys removed, values scrubbed."""
    return dict(redact_processor(None, "", dict(attributes)))


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

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def _json_default(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime | date) else str(value)


_HANDLER_NAME: Final = "blume-structlog"


def configure_logging(level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Log at ``level`` to ``stream`` (by default whatever ``sys.stderr`` is at each line).

    structlog for our lines, and the standard library's records (aio-pika, aiormq, uvicorn,
    asyncio, SQLAlchemy) rendered by the same processors: one JSON object per line, the same
    context and redaction, a traceback as the ``exception`` field.
    """
    output = cast(TextIO, _CurrentStderr()) if stream is None else stream
    as_json = fmt == "json" or (fmt == "auto" and not output.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(default=_json_default)
        if as_json
        else structlog.dev.ConsoleRenderer()
    )
    threshold = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    finishing: list[Any] = [structlog.processors.format_exc_info, redact_processor, renderer]
    structlog.configure(
        processors=[*shared, *finishing],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=output),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(output)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finishing],
        )
    )
    root = logging.getLogger()
    for previous in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(previous)  # configuring twice must not print every line twice
    root.addHandler(handler)
    root.setLevel(threshold)


def reset_logging() -> None:
    """Undo ``configure_logging``: structlog's defaults back, our handler off the root logger."""
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(handler)
