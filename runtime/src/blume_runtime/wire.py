"""What our retried and dead-lettered messages carry on the wire, and how to read it safely.

Header values arrive from any publisher the broker lets in, so every reader here accepts
anything (wrong types, negative or huge numbers, forged ``x-death``) and never raises.
The ``x-blume-*`` headers are believed only when the message was published by the consuming
service's own broker user or the ops user (``BrokerUsers.trusted_for``) *and* carries
``x-blume-producer``: only those users can write to a service's delay queues and DLQ.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

ATTEMPT: Final = "x-blume-attempt"
FIRST_FAILURE_AT: Final = "x-blume-first-failure-at"
LAST_FAILURE_AT: Final = "x-blume-last-failure-at"
ERROR_CLASS: Final = "x-blume-error-class"
EVENT_TYPE: Final = "x-blume-event-type"
PRODUCER: Final = "x-blume-producer"
DEAD_LETTER_CAUSE: Final = "x-blume-dead-letter-cause"
SERVICE: Final = "x-blume-service"
DUE_AT: Final = "x-blume-due-at"
"""When a retry longer than the largest delay tier is due: it waits in more than one tier."""
X_DEATH: Final = "x-death"
DELIVERY_COUNT: Final = "x-delivery-count"
"""Set by a quorum queue on redelivery; stale once the message is republished elsewhere."""

OURS: Final = frozenset(
    {
        ATTEMPT,
        FIRST_FAILURE_AT,
        LAST_FAILURE_AT,
        ERROR_CLASS,
        EVENT_TYPE,
        PRODUCER,
        DEAD_LETTER_CAUSE,
        SERVICE,
        DUE_AT,
        X_DEATH,
        DELIVERY_COUNT,
    }
)
"""Headers we write (or the broker writes) ourselves; never copied from an incoming message."""

MAX_ATTEMPT: Final = 1_000_000
"""Far above any retry budget; a trusted header beyond it is clamped, not believed."""
_MAX_TEXT: Final = 255
_INT64: Final = range(-(2**63), 2**63)


def text(value: Any, *, limit: int = _MAX_TEXT) -> str | None:
    """A short printable string, or None (bytes are decoded when they are UTF-8)."""
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return None
    if isinstance(value, str) and len(value) <= limit and value.isprintable():
        return value
    return None


def attempt_number(value: Any) -> int | None:
    """An attempt count from a header: a positive integer (or its decimal spelling)."""
    number: int | float | Decimal
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        number = value if math.isfinite(value) and value.is_integer() else 0
    elif isinstance(value, Decimal):
        number = value if value.is_finite() and value == value.to_integral_value() else 0
    elif (spelled := text(value, limit=12)) is not None and spelled.isdecimal():
        number = int(spelled)
    else:
        return None
    if number < 1:
        return None
    return MAX_ATTEMPT if number >= MAX_ATTEMPT else int(number)


def timestamp(value: Any) -> datetime | None:
    """An aware UTC time from an ISO-8601 string or an AMQP timestamp; None otherwise."""
    if isinstance(value, datetime):
        moment = value
    elif (spelled := text(value, limit=64)) is not None:
        try:
            moment = datetime.fromisoformat(spelled)
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        return None
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):  # year 1 or 9999 pushed past the calendar
        return None


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class WireFacts:
    """What a delivery's properties say about it, after the trust rule."""

    producer: str | None
    """The verified producer: a broker user name, or None when nobody validated one."""
    trusted: bool
    """The ``x-blume-*`` headers were written by the owning service or the ops tool."""
    event_type: str
    """The original routing key (a retried or replayed message arrives under another)."""
    attempt: int
    first_failed_at: datetime | None
    last_failed_at: datetime | None
    error_class: str | None
    due_at: datetime | None
    dead_letter_cause: str | None
    service: str | None


def read_facts(
    user_id: str | None,
    headers: Mapping[str, Any] | None,
    routing_key: str,
    *,
    trusted_users: Collection[str],
) -> WireFacts:
    """Apply the producer rule to a delivery's ``user_id``, headers and routing key.

    No ``user_id``: no producer. The consuming service's own user or the ops user with an
    ``x-blume-producer`` header: the header (the identity the message had before our own
    retry or a replay; empty means it had none). Anyone else: the ``user_id`` itself, and
    every ``x-blume-*`` header is ignored (attempt 1).
    """
    found = headers if isinstance(headers, Mapping) else {}
    publisher = text(user_id)
    carried = found.get(PRODUCER)
    carried_text = text(carried)
    trusted = publisher is not None and publisher in trusted_users and carried_text is not None
    if not trusted:
        return WireFacts(publisher, False, routing_key, 1, None, None, None, None, None, None)
    return WireFacts(
        producer=carried_text or None,
        trusted=True,
        event_type=text(found.get(EVENT_TYPE)) or routing_key,
        attempt=attempt_number(found.get(ATTEMPT)) or 1,
        first_failed_at=timestamp(found.get(FIRST_FAILURE_AT)),
        last_failed_at=timestamp(found.get(LAST_FAILURE_AT)),
        error_class=text(found.get(ERROR_CLASS)),
        due_at=timestamp(found.get(DUE_AT)),
        dead_letter_cause=text(found.get(DEAD_LETTER_CAUSE)),
        service=text(found.get(SERVICE)),
    )


@dataclass(frozen=True, slots=True)
class BrokerDeath:
    """The broker's newest ``x-death`` entry (all None when absent or not its shape)."""

    reason: str | None = None
    routing_key: str | None = None
    """The first routing key the message had when it died (its original event type)."""
    time: datetime | None = None


def broker_death(headers: Mapping[str, Any] | None) -> BrokerDeath:
    deaths = headers.get(X_DEATH) if isinstance(headers, Mapping) else None
    if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], Mapping):
        return BrokerDeath()
    newest = deaths[0]
    keys = newest.get("routing-keys")
    first_key = text(keys[0]) if isinstance(keys, list) and keys else None
    return BrokerDeath(text(newest.get("reason")), first_key, timestamp(newest.get("time")))


def portable(value: Any) -> bool:
    """Whether a header value can be sent again as it came (pamqp encodes it losslessly).

    Foreign headers are carried across retries and dead-lettering when they are; one that
    is not (an unsigned 64-bit number beyond the signed range, say) is dropped rather than
    making the republish fail.
    """
    if value is None or isinstance(value, bool | str | bytes | datetime | Decimal):
        return True
    if isinstance(value, int):
        return value in _INT64
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(portable(item) for item in value)
    if isinstance(value, Mapping):
        return all(isinstance(key, str) and portable(item) for key, item in value.items())
    return False


def foreign_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The publisher's own headers (tracing, say), without ours and the broker's."""
    if not isinstance(headers, Mapping):
        return {}
    return {
        key: value
        for key, value in headers.items()
        if isinstance(key, str) and key not in OURS and portable(value)
    }


def carried_headers(
    facts: WireFacts,
    original: Mapping[str, Any] | None,
    *,
    now: datetime,
    attempt: int,
    error_class: str | None,
) -> dict[str, Any]:
    """The headers of a message we send back to its service or to its DLQ.

    The publisher's own headers travel on; ours describe the message's history and keep
    its verified producer (empty when it had none), so the next reader can apply the
    producer rule to a message it receives from us.
    """
    headers = foreign_headers(original)
    headers[PRODUCER] = facts.producer or ""
    headers[EVENT_TYPE] = facts.event_type
    headers[ATTEMPT] = attempt
    headers[FIRST_FAILURE_AT] = iso(facts.first_failed_at or now)
    headers[LAST_FAILURE_AT] = iso(now)
    if kept_class := error_class or facts.error_class:
        headers[ERROR_CLASS] = kept_class
    return headers
