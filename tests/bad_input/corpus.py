"""What a bad-input case is, what must become of it, and the whole corpus.

A case is one AMQP message (body bytes, properties, routing key, and who publishes it) and
the outcome the system owes it: a ``share.rejected`` with a reason code, or a dead letter
with a cause. The rules the expectations follow, so that a reader can check each one:

- **Unreadable** (cause ``malformed``, at every consumer): a content encoding other than
  none or ``identity``; a content type other than ``application/cloudevents+json`` or
  ``application/json`` (parameters such as ``charset`` allowed; no content type at all is
  "other"); a body over 256 KiB (262,144 bytes; exactly that many is fine); invalid UTF-8;
  JSON that does not parse (broken; ``NaN`` and ``Infinity``, which RFC 8259 does not
  allow; nested thousands deep) or is not an object; an object that is not a CloudEvent
  even leniently.
- **Lenient CloudEvent**: ``specversion`` is "1.0", ``id`` and ``source`` are usable as a
  dedupe key (what the strict envelope allows them: 1 to 256 printable ASCII characters)
  and ``type`` is an event type. A ``study.send.requested`` that is a lenient but not a
  strict CloudEvent (``tenantid``, ``correlationid``, ``time`` or ``datacontenttype``
  missing, over-long or odd; extra attributes) is answered: ``rejected(invalid_envelope)``.
  Any other type that is not a strict CloudEvent is ``malformed``. The pinned envelope
  defaults a missing ``specversion`` or ``datacontenttype``.
- **The body is authoritative**: the outcome follows the event in the body, whatever the
  routing key, ``message_id`` or headers say (they only route and describe).
- **Requests** whose data breaks the contract are rejected with the reason code the
  dispatcher's field rules give for the first offending field; the rejection never echoes
  the offending value.
- **Internal events** are judged on who published them first: from anyone but their
  registered producer, ``untrusted_producer`` (whatever their data); from it, data that
  breaks the contract is ``contract``. ``share.revoke.requested`` is an upstream type: any
  publisher, and bad data is ``contract``.
- **The audit sink** (bound to the requests' and the operators' keys, and to what reaches
  no other queue) dead-letters what no one can read and what an untrusted producer sent,
  and records everything else it can read, broken data included. A lenient-only request
  is left to the runtime: recorded or ``malformed``. What another consumer refuses, that
  consumer records as a security event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal

from blume_contracts.registry import EVENTS
from blume_runtime.transport import DeadLetterCause
from blume_runtime.unit_of_work import AUDITED_FROM_THE_EXCHANGE

CLOUDEVENTS_JSON: Final = "application/cloudevents+json"
MAX_BODY_BYTES: Final = 256 * 1024
INVALID_ENVELOPE: Final = "invalid_envelope"
"""The reason code for a request whose envelope is a CloudEvent only leniently (issue 8)."""

SERVICES: Final = ("share_dispatcher", "link_issuer", "blume_publisher", "notifier", "audit_sink")
"""The workers ``blume-share run`` starts, each with its queue ``blume.share.<name>``."""
AUDIT_SINK: Final = "audit_sink"


class Producer(StrEnum):
    """Who publishes a case, as the broker vouches for it (the AMQP ``user_id``)."""

    ANONYMOUS = "anonymous"
    """No ``user_id``: nothing vouches for the publisher."""
    STRANGER = "stranger"
    """A broker user that is no service's user (an intruder with publish rights)."""
    SERVICE = "service"
    """The broker user of the event type's registered producer."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a consumer must do with a case: answer it, record it, or dead-letter it."""

    kind: Literal["rejected", "dead_lettered", "recorded"]
    code: str | None = None
    """The rejection reason or the dead-letter cause."""

    def __str__(self) -> str:
        return f"{self.kind}({self.code})" if self.code else self.kind


def rejected(reason: str) -> Outcome:
    return Outcome("rejected", reason)


def dead_lettered(cause: DeadLetterCause) -> Outcome:
    return Outcome("dead_lettered", cause.value)


MALFORMED: Final = dead_lettered(DeadLetterCause.MALFORMED)
UNTRUSTED: Final = dead_lettered(DeadLetterCause.UNTRUSTED_PRODUCER)
CONTRACT: Final = dead_lettered(DeadLetterCause.CONTRACT)
RECORDED: Final = Outcome("recorded")


@dataclass(frozen=True, slots=True)
class Case:
    """One hostile message and what must become of it."""

    name: str
    layer: Literal["transport", "envelope", "data", "internal"]
    body: bytes = field(repr=False)
    expect: frozenset[Outcome]
    """What every addressed consumer (not the audit sink) must do; one outcome unless the
    rules above leave a choice, which the case's comment then names."""
    audit: frozenset[Outcome]
    """What the audit sink must do."""
    routing_key: str = "study.send.requested"
    content_type: str | None = CLOUDEVENTS_JSON
    content_encoding: str | None = None
    message_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict, repr=False)
    producer: Producer = Producer.ANONYMOUS
    correlation_id: str | None = None
    """The request's correlation id when it is a usable one: its answer must carry it."""
    bad_value: str | None = None
    """The offending value, which no rejection message and no log line may echo."""

    @property
    def receivers(self) -> tuple[str, ...]:
        """The services whose queues this routing key reaches (topic bindings by type): the
        audit sink's only for the keys it binds (what no producer of ours stages) and for
        what reaches no other queue (the alternate exchange)."""
        spec = EVENTS.get(self.routing_key)
        bound = spec.consumers if spec else ()
        others = tuple(name for name in SERVICES if name in bound and name != AUDIT_SINK)
        if self.routing_key in AUDITED_FROM_THE_EXCHANGE or not others:
            return (*others, AUDIT_SINK)
        return others

    def expected_at(self, service: str) -> frozenset[Outcome]:
        return self.audit if service == AUDIT_SINK else self.expect


def build_corpus(tag: str = "") -> list[Case]:
    """Every hand-written case. ``tag`` makes event ids unique per run (chaos reuses it)."""
    from tests.bad_input import cases_data, cases_envelope, cases_internal, cases_transport

    return [
        *cases_transport.cases(tag),
        *cases_envelope.cases(tag),
        *cases_data.cases(tag),
        *cases_internal.cases(tag),
    ]
