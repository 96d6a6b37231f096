"""Fakes of the runtime's ports, for unit tests of services and of the runtime itself.

One copy for every test suite: a transport that records what is published, a delivery that
records how the worker settled it, a clock a test moves by hand, a mailer that records what
it is asked to send, and a log that discards what handlers write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from blume_contracts.serialisation import event_body

from blume_runtime.identity import EMBEDDED_BROKER_USER
from blume_runtime.topology import QueueSpec
from blume_runtime.transport import (
    Consumer,
    DeadLetterCause,
    Delivery,
    OutgoingMessage,
    Transport,
)


class RecordingTransport(Transport):
    """Keeps what is published, in order; consumes nothing. Set ``fail`` to refuse publishes."""

    def __init__(self) -> None:
        self.published: list[OutgoingMessage] = []
        self.fail = False

    def subscribe(self, queue: QueueSpec, consumer: Consumer) -> None:
        raise AssertionError("tests deliver straight to the worker")

    async def start(self) -> None:
        return None

    async def publish(self, message: OutgoingMessage) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.published.append(message)

    async def stop(self) -> None:
        return None

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """The published CloudEvents as JSON documents, optionally of one type."""
        found = [json.loads(message.body) for message in self.published]
        return [event for event in found if event_type is None or event["type"] == event_type]


@dataclass(eq=False)
class FakeDelivery(Delivery):
    """A delivery that remembers how it was settled (and refuses to be settled twice)."""

    body: bytes
    _: KW_ONLY
    message_id: str | None = None
    routing_key: str = ""
    attempt: int = 1
    content_type: str | None = "application/cloudevents+json"
    content_encoding: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    producer: str | None = None
    first_failed_at: datetime | None = None
    settlement: str | None = field(default=None, init=False)
    retry_delay: float | None = field(default=None, init=False)
    error_class: str | None = field(default=None, init=False)
    cause: DeadLetterCause | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # A copy, so a test's headers stay as it wrote them whatever the worker does here.
        self.headers = dict(self.headers)

    @classmethod
    def of(cls, event: Any, **options: Any) -> FakeDelivery:
        """A delivery of a CloudEvent model, with its id and type as message id and key,
        published by our own services on the embedded default unless ``producer`` says
        otherwise (``producer=None``: a publisher the broker did not name)."""
        options.setdefault("producer", EMBEDDED_BROKER_USER)
        return cls(
            event_body(event),
            message_id=event.id,
            routing_key=event.type,
            **options,
        )

    def _settle(self, how: str) -> None:
        if self.settlement is not None:
            raise AssertionError(f"settled twice: {self.settlement}, then {how}")
        self.settlement = how
        self.settled = True

    async def ack(self) -> None:
        self._settle("ack")

    async def retry_later(self, delay_seconds: float, *, error_class: str) -> None:
        self._settle("retry")
        self.retry_delay = delay_seconds
        self.error_class = error_class

    async def dead_letter(self, cause: DeadLetterCause, *, error_class: str | None = None) -> None:
        self._settle("dead_letter")
        self.cause = cause
        self.error_class = error_class


@dataclass
class FakeClock:
    """``now`` until a test moves it: ``clock.advance(minutes=5)``."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class FakeMailer:
    """Records what it is asked to send; raises ``failure`` instead when one is set."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.failure = failure
        self.sent: list[EmailMessage] = []
        self.attempts = 0

    async def send(self, message: EmailMessage) -> None:
        self.attempts += 1
        if self.failure is not None:
            raise self.failure
        self.sent.append(message)


class NullLog:
    """A handler's ``ctx.log`` for tests that do not read it."""

    def __getattr__(self, _level: str) -> Any:
        return _discard


def _discard(*_args: object, **_kwargs: object) -> None:
    return None


@dataclass
class FakeMonotonicClock:
    """Monotonic seconds (as ``time.monotonic`` gives) until a test moves them."""

    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
