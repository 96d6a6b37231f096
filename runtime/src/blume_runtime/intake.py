"""What the worker checks before it parses anything, and the decisions it can reach.

A delivery's body is only read as JSON when its content encoding is none (or ``identity``),
its content type ``application/cloudevents+json`` or ``application/json`` (parameters such
as ``charset=utf-8`` allowed), its size within ``BLUME_MAX_MESSAGE_BYTES``, its bytes UTF-8,
and the JSON is one object nested at most ``MAX_DEPTH`` deep (every contract needs fewer
than ten levels; deeper would only exhaust the recursion of whatever walks it) with no lone
surrogate. Anything else is ``malformed``; the problem is named by a short code, never by
what the body said.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

from blume_contracts.serialisation import compact_json
from pydantic import BaseModel, ValidationError

from blume_runtime.logging import bounded, scrub_text
from blume_runtime.transport import DeadLetterCause, Delivery

CONTENT_TYPES: Final = frozenset({"application/cloudevents+json", "application/json"})
_IDENTITY_ENCODINGS: Final = frozenset({"", "identity"})
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_MAX_PROBLEMS: Final = 5
MAX_DEPTH: Final = 32

Decided = Literal["ack", "retry", "dead_letter"]
_LEVELS: Final[Mapping[Decided, int]] = {
    "ack": logging.INFO,
    "retry": logging.WARNING,
    "dead_letter": logging.ERROR,
}


def intake_problem(delivery: Delivery, max_bytes: int) -> str | None:
    """Why the body must not be parsed at all, or None."""
    encoding = (delivery.content_encoding or "").strip().lower()
    if encoding not in _IDENTITY_ENCODINGS:
        return "content_encoding"
    media_type = (delivery.content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in CONTENT_TYPES:
        return "content_type"
    if len(delivery.body) > max_bytes:
        return "too_large"
    return None


def read_document(delivery: Delivery, max_bytes: int) -> tuple[dict[str, Any] | None, str]:
    """The body as a JSON object, or None and the problem's code."""
    problem = intake_problem(delivery, max_bytes)
    if problem is not None:
        return None, problem
    try:
        text = delivery.body.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not_utf8"
    return _json_object(text)


def _json_object(text: str) -> tuple[dict[str, Any] | None, str]:
    try:
        document = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; deep nesting
        return None, "not_json"
    if not isinstance(document, dict):
        return None, "not_an_object"
    if _deeper_than(document, MAX_DEPTH):
        return None, "too_deep"
    # An escaped lone surrogate decodes to a str no database or hash can encode.
    if _SURROGATE_ESCAPE.search(text) and not _encodable(document):
        return None, "lone_surrogate"
    return document, ""


def _encodable(document: dict[str, Any]) -> bool:
    try:
        compact_json(document).encode()
    except UnicodeEncodeError:
        return False
    return True


def _deeper_than(document: dict[str, Any], limit: int) -> bool:
    """Level by level, containers only: a flat event costs a couple of list builds."""
    level: list[Any] = [document]
    for _ in range(limit):
        level = [
            child
            for container in level
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], value: Any) -> tuple[M | None, ValidationError | None]:
    """The model, or the validation error (so a handler never runs inside an ``except``)."""
    try:
        return model.model_validate(value), None
    except ValidationError as error:
        return None, error


def failure_fields(error: BaseException, with_traceback: bool) -> dict[str, Any]:
    """How a failure is logged: its type and a scrubbed, bounded message; the traceback too
    (a bug: nobody classified it) as the line's ``exception`` field."""
    fields: dict[str, Any] = {
        "error_type": type(error).__name__,
        "error": bounded(scrub_text(str(error)), 300),
    }
    if with_traceback:
        fields["exc_info"] = error
    return fields


def validation_summary(error: ValidationError) -> str:
    """Where validation failed and how (``tenantid:string_too_long``), never the input."""
    problems = [
        f"{'.'.join(map(str, detail['loc'])) or 'document'}:{detail['type']}"
        for detail in error.errors(include_input=False, include_url=False)[:_MAX_PROBLEMS]
    ]
    return ", ".join(problems)


@dataclass(frozen=True, slots=True)
class Decision:
    """How one delivery is settled, and what its log line says about it."""

    decision: Decided
    outcome: str | None = None
    cause: DeadLetterCause | None = None
    error_class: str | None = None
    delay_seconds: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def ack(cls, outcome: str, **details: Any) -> Decision:
        return cls("ack", outcome=outcome, details=details)

    @classmethod
    def retry(cls, delay_seconds: float, error_class: str, **details: Any) -> Decision:
        return cls("retry", error_class=error_class, delay_seconds=delay_seconds, details=details)

    @classmethod
    def dead_letter(
        cls, cause: DeadLetterCause, *, error_class: str | None = None, **details: Any
    ) -> Decision:
        return cls("dead_letter", cause=cause, error_class=error_class, details=details)

    @property
    def level(self) -> int:
        return _LEVELS[self.decision]

    def fields(self) -> dict[str, Any]:
        found = {
            "decision": self.decision,
            "outcome": self.outcome,
            "cause": self.cause.value if self.cause else None,
            "error_class": self.error_class,
            "delay_seconds": None if self.delay_seconds is None else round(self.delay_seconds, 3),
        }
        return {key: value for key, value in found.items() if value is not None} | dict(
            self.details
        )

    async def settle(self, delivery: Delivery) -> None:
        if self.decision == "ack":
            await delivery.ack()
        elif self.decision == "retry":
            assert self.error_class is not None
            assert self.delay_seconds is not None
            await delivery.retry_later(self.delay_seconds, error_class=self.error_class)
        else:
            assert self.cause is not None
            await delivery.dead_letter(self.cause, error_class=self.error_class)
