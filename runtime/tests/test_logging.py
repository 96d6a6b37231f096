"""Library log lines (aio-pika, aiormq, uvicorn, asyncio, SQLAlchemy) come out like ours:
one JSON object per line, the same context, the same redaction, tracebacks as a field."""

from __future__ import annotations

import io
import json
import logging
from typing import Any, ClassVar

import pytest
import structlog
from blume_runtime.logging import bounded, configure_logging, reset_logging

from runtime.tests.pipeline_support import JsonLines


@pytest.mark.parametrize(
    "library", ["aio_pika.robust_connection", "aiormq.connection", "uvicorn.error", "asyncio"]
)
def test_a_library_line_is_one_json_object_with_context_and_redaction(
    json_lines: JsonLines, library: str
) -> None:
    """A standard-library record becomes JSON with its logger name, level and timestamp,
    the bound context, and URL credentials and addresses scrubbed."""
    with structlog.contextvars.bound_contextvars(service="notifier", message_id="m-1"):
        logging.getLogger(library).warning(
            "Connection to %s lost for %s, reconnecting",
            "amqp://blume:hunter2@rabbit:5672/",
            "bob.jones@clinic.example",
        )
    (line,) = json_lines.read()
    assert line["logger"] == library
    assert line["level"] == "warning"
    assert (line["service"], line["message_id"]) == ("notifier", "m-1")
    assert "timestamp" in line
    assert "hunter2" not in line["event"]
    assert "bob.jones@clinic.example" not in line["event"]
    assert line["event"].startswith("Connection to amqp://[credentials]@rabbit")


def test_a_library_traceback_is_a_field_of_one_json_object(json_lines: JsonLines) -> None:
    """``logger.exception`` from a library: one line, the traceback in ``exception``."""
    try:
        raise ConnectionResetError("peer went away")
    except ConnectionResetError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    (line,) = json_lines.read()
    assert line["event"] == "Task exception was never retrieved"
    assert line["level"] == "error"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert "ConnectionResetError: peer went away" in line["exception"]


def test_library_lines_below_the_level_are_dropped(json_lines: JsonLines) -> None:
    """Library DEBUG chatter stays out at the default INFO level."""
    logging.getLogger("sqlalchemy.engine").debug("SELECT 1")
    assert json_lines.read() == []


def test_configuring_twice_writes_each_line_once(json_lines: JsonLines) -> None:
    """Re-configuring (tests, embedded runs) replaces the handler instead of adding one."""
    configure_logging("INFO", "json")
    logging.getLogger("aiormq.connection").warning("once")
    assert [line["event"] for line in json_lines.read()] == ["once"]


def test_bounded_makes_any_value_printable_and_short() -> None:
    """Control characters become ``?``; long values are cut and marked; None stays None."""
    assert bounded("a\nb\x1bc") == "a?b?c"
    assert bounded("x" * 200, 10) == "x" * 10 + "…"
    assert bounded(None) is None
    assert bounded(b"\x00") == "b'\\x00'"


def test_a_given_stream_gets_library_lines_too() -> None:
    """Logging configured onto a stream (a CLI's own output, say) sends library lines there."""
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    try:
        logging.getLogger("aiormq.connection").warning("to the stream")
    finally:
        reset_logging()
    assert json.loads(stream.getvalue())["event"] == "to the stream"


def test_span_attributes_get_the_log_redaction_rules() -> None:
    """An attribute under a PHI-marked key is redacted and an address in a value is
    scrubbed, as in a log line, before a span carries it."""
    from blume_runtime.logging import REDACTED, redacted

    cleaned = redacted({"patient_email": "jane@example.org", "note": "to bob@clinic.example"})
    assert cleaned["patient_email"] == REDACTED
    assert "bob@clinic.example" not in cleaned["note"]


def test_a_recorded_span_gets_redacted_attributes_and_an_unrecorded_one_none() -> None:
    """``describe`` gives a recorded span the redacted attributes (a marked key redacted, an
    address scrubbed) and skips a span that records nothing (tracing off)."""
    from blume_runtime.logging import REDACTED
    from blume_runtime.tracing import describe
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import INVALID_SPAN_CONTEXT, NonRecordingSpan

    recorded = TracerProvider().get_tracer("test").start_span("recorded")
    describe(recorded, {"patient_email": "jane@example.org", "note": "to bob@clinic.example"})
    recorded.end()
    attributes = dict(recorded.attributes or {})  # type: ignore[attr-defined]
    assert attributes["patient_email"] == REDACTED
    assert "bob@clinic.example" not in str(attributes["note"])

    class Unrecorded(NonRecordingSpan):
        given: ClassVar[list[object]] = []

        def set_attributes(self, attributes: Any) -> None:
            self.given.append(attributes)

    unrecorded = Unrecorded(INVALID_SPAN_CONTEXT)
    describe(unrecorded, {"note": "to bob@clinic.example"})
    assert unrecorded.given == []
