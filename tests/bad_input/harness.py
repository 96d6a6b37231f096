"""Feeding messages through a real ``Worker`` and watching everything it does.

One ``Observed`` per delivery: how it was settled (``FakeDelivery`` refuses a second
settlement), whatever escaped the worker, the events it published, and every line it
logged (structlog writes to whatever ``sys.stderr`` is at the time).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from blume_runtime.db import Database
from blume_runtime.outbox import OutboxRelay
from blume_runtime.service import Service
from blume_runtime.settings import Settings
from blume_runtime.testing import FakeDelivery, RecordingTransport
from blume_runtime.transport import Delivery
from blume_runtime.worker import Worker
from pydantic import SecretStr

from tests.bad_input.corpus import Case, Producer

SERVICE_USER: Final = "blume-services"
STRANGER_USER: Final = "intruder"
SETTLED: Final = "delivery settled"


def identity_settings(**options: Any) -> Settings:
    """Settings of a single-user deployment whose broker user is ``SERVICE_USER``.

    With ``BLUME_BROKER_USERS`` unset every service is the user of ``BLUME_AMQP_URL``
    (issue 8): that names the one trusted producer. The tests never connect to it.
    """
    url = SecretStr(f"amqp://{SERVICE_USER}:unused@127.0.0.1:9/")
    return Settings(amqp_url=url, **options)


PRODUCER_USERS: Final[Mapping[Producer, str | None]] = {
    Producer.ANONYMOUS: None,
    Producer.STRANGER: STRANGER_USER,
    Producer.SERVICE: SERVICE_USER,
}


def make_worker(service: Service, db: Database, relay: OutboxRelay, settings: Settings) -> Worker:
    """A worker as the runtime builds one from its settings (identities, budgets, size limit)."""
    return Worker(service, db, relay, settings)


def delivery_of(case: Case) -> FakeDelivery:
    """The case as the transport hands it over: raw bytes and AMQP properties."""
    return FakeDelivery(
        case.body,
        message_id=case.message_id,
        routing_key=case.routing_key,
        content_type=case.content_type,
        content_encoding=case.content_encoding,
        headers=case.headers,
        producer=PRODUCER_USERS[case.producer],
    )


@dataclass
class Observed:
    """Everything one delivery led to."""

    delivery: FakeDelivery
    escaped: BaseException | None
    published: list[dict[str, Any]]
    log_text: str
    log_lines: list[dict[str, Any]] = field(default_factory=list)
    unparsable_lines: list[str] = field(default_factory=list)

    @property
    def settled_lines(self) -> list[dict[str, Any]]:
        return [line for line in self.log_lines if line.get("event") == SETTLED]

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [event for event in self.published if event.get("type") == event_type]


class WorkerUnderTest:
    """A service's real worker over a database, publishing into a recording transport."""

    def __init__(self, service: Service, db: Database, settings: Settings) -> None:
        self.service = service
        self.db = db
        self.transport = RecordingTransport()
        self.worker = make_worker(service, db, OutboxRelay(db, self.transport), settings)
        self._observed: dict[str, Observed] = {}

    async def observe(self, case: Case) -> Observed:
        """The case delivered once; later calls return what that delivery did."""
        if case.name not in self._observed:
            self._observed[case.name] = await self.deliver(delivery_of(case))
        return self._observed[case.name]

    async def deliver(self, delivery: FakeDelivery) -> Observed:
        already = len(self.transport.published)
        stream = io.StringIO()
        escaped: BaseException | None = None
        with contextlib.redirect_stderr(stream):
            try:
                await self.worker(delivery)
            except Exception as error:  # noqa: BLE001 - what escapes is what we observe
                escaped = error
        published = [json.loads(m.body) for m in self.transport.published[already:]]
        observed = Observed(delivery, escaped, published, stream.getvalue())
        for line in observed.log_text.splitlines():
            try:
                observed.log_lines.append(json.loads(line))
            except json.JSONDecodeError:
                observed.unparsable_lines.append(line)
        return observed


def problems_with_logs(observed: Observed, secrets: list[str]) -> list[str]:
    """How the log lines of one delivery break the rule (one JSON line, no body, no PHI)."""
    delivery: Delivery = observed.delivery
    found: list[str] = []
    if observed.unparsable_lines:
        found.append(f"lines that are not JSON: {observed.unparsable_lines[:2]!r}")
    settled = observed.settled_lines
    if len(settled) != 1:
        found.append(f"{len(settled)} {SETTLED!r} lines, not one")
    for line in settled:
        fake = observed.delivery
        if line.get("decision") != fake.settlement:
            found.append(f"decision {line.get('decision')!r}, settled {fake.settlement!r}")
        if fake.cause is not None and line.get("cause") != fake.cause.value:
            found.append(f"cause {line.get('cause')!r}, dead-lettered {fake.cause.value!r}")
    for secret in secrets:
        if secret and secret in observed.log_text:
            found.append(f"logged {secret[:40]!r}")
    if len(delivery.body) > 64 and delivery.body.decode(errors="replace") in observed.log_text:
        found.append("logged the body")
    return found


SENDER_NOTICE: Final = "share.sender.notification.requested"


def answer_types(observed: Observed) -> list[str]:
    """The types published in answer, leaving out the one notice that tells a known tenant's
    sender of the rejection (issue 9): it belongs to the rejection, not beside it."""
    types = [str(event.get("type")) for event in observed.published]
    notices = observed.of_type(SENDER_NOTICE)
    if len(notices) == 1 and notices[0]["data"].get("occasion") == "rejected":
        types.remove(SENDER_NOTICE)
    return types


def outcome_of(observed: Observed) -> str:
    """What a delivery came to, in the corpus's terms (``rejected(reason)`` and so on)."""
    fake = observed.delivery
    if observed.escaped is not None:
        return f"raised {type(observed.escaped).__name__}"
    if fake.settlement == "dead_letter" and fake.cause is not None:
        return f"dead_lettered({fake.cause.value})"
    if fake.settlement != "ack":
        return f"settled {fake.settlement!r} ({fake.error_class})"
    rejections = observed.of_type("share.rejected")
    if answer_types(observed) == ["share.rejected"]:
        return f"rejected({rejections[0]['data'].get('reason')})"
    if not observed.published:
        return "acknowledged"
    return "acknowledged, published " + ", ".join(str(e.get("type")) for e in observed.published)
