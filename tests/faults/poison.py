"""Poison messages: every kind of hostile or broken delivery, published from outside.

Each case says what the system owes it: a request that parses as a CloudEvent owes exactly
one outcome event (``share.rejected`` here); a forged internal event owes no email to the
address it names; every case, whatever it is, owes no stall (checked on the queues). The
``bad-input`` corpus under ``tests/bad_input/`` is the fuller set; this is the suite's own
handful, one of each kind the issue lists.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from tests.faults.traffic import TENANT, Outgoing

FORGED_SOURCE: Final = "/evil/forged"
FORGED_DOMAIN: Final = "attacker.example"
REQUEST: Final = "study.send.requested"


@dataclass(frozen=True, slots=True)
class PoisonCase:
    kind: str
    message: Outgoing
    correlation_id: str | None
    owes_outcome: bool
    """A study.send.requested that parses as a CloudEvent: exactly one outcome event."""
    forged_address: str | None = None
    """A forged event naming this address: no email may reach it."""


def _envelope(number: int, kind: str, **overrides: Any) -> dict[str, Any]:
    event_id = str(uuid.uuid4())
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "/blume-chaos/poison",
        "type": REQUEST,
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "tenantid": TENANT,
        "correlationid": f"chaos-poison-{kind}-{number}",
        "data": {"method": "external_link", "tenant_id": TENANT},
        **overrides,
    }


def _json_case(
    kind: str,
    number: int,
    *,
    owes_outcome: bool,
    content_type: str = "application/cloudevents+json",
    headers: dict[str, Any] | None = None,
    with_message_id: bool = True,
    **overrides: Any,
) -> PoisonCase:
    event = _envelope(number, kind, **overrides)
    return PoisonCase(
        kind,
        Outgoing(
            routing_key=str(event["type"]) if kind != "unknown_type" else REQUEST,
            body=json.dumps(event).encode(),
            message_id=event["id"] if with_message_id else None,
            content_type=content_type,
            headers=headers or {},
        ),
        correlation_id=str(event["correlationid"]),
        owes_outcome=owes_outcome,
    )


def _raw_case(
    kind: str, body: bytes, content_type: str | None, content_encoding: str | None = None
) -> PoisonCase:
    message = Outgoing(REQUEST, body, str(uuid.uuid4()), content_type, content_encoding)
    return PoisonCase(kind, message, correlation_id=None, owes_outcome=False)


def _forged_blume_published(number: int) -> PoisonCase:
    address = f"forged-{number}@{FORGED_DOMAIN}"
    event = _envelope(
        number,
        "forged_blume_published",
        source=FORGED_SOURCE,
        type="share.blume.published",
        data={
            "share_id": f"shr_{uuid.uuid4().hex}",
            "blume_patient_id": "bp-forged",
            "entry_id": f"ent_{uuid.uuid4().hex}",
            "newly_published": True,
            "email_notifications": True,
            "patient_email": address,
            "locale": "en-CA",
        },
    )
    message = Outgoing("share.blume.published", json.dumps(event).encode(), event["id"])
    return PoisonCase(
        "forged_blume_published", message, event["correlationid"], False, forged_address=address
    )


def _forged_completed(number: int) -> PoisonCase:
    return _json_case(
        "forged_completed",
        number,
        owes_outcome=False,
        source=FORGED_SOURCE,
        type="share.completed",
        data={
            "share_id": f"shr_{uuid.uuid4().hex}",
            "method": "external_link",
            "completed_at": datetime.now(UTC).isoformat(),
        },
    )


def _deep_nesting() -> bytes:
    depth = 100_000
    return b'{"a":' * depth + b"1" + b"}" * depth


CASES: Final[tuple[Callable[[int], PoisonCase], ...]] = (
    lambda n: _raw_case("broken_json", b'{"specversion": "1.0", "id": ', "application/json"),
    lambda n: _raw_case("not_a_cloudevent", b'{"hello": "world"}', "application/json"),
    lambda n: _raw_case("json_array", b"[1, 2, 3]", "application/cloudevents+json"),
    lambda n: _raw_case("binary_garbage", os.urandom(512), "application/octet-stream"),
    lambda n: _raw_case("invalid_utf8", b'{"specversion": "1.0", "id": "\xff\xfe"}', None),
    lambda n: _raw_case(
        "claimed_gzip",
        json.dumps(_envelope(n, "claimed_gzip")).encode(),
        "application/cloudevents+json",
        "gzip",
    ),
    lambda n: _raw_case("deep_nesting", _deep_nesting(), "application/json"),
    lambda n: _json_case(
        "oversized",
        n,
        owes_outcome=True,
        data={"method": "external_link", "tenant_id": TENANT, "message": "x" * (1 << 20)},
    ),
    lambda n: _json_case("contract_breach", n, owes_outcome=True),
    lambda n: _json_case("long_tenantid", n, owes_outcome=True, tenantid="t" * 100),
    lambda n: _json_case(
        "odd_headers",
        n,
        owes_outcome=True,
        headers={"x-blume-attempt": "nine", "x-death": "not a list"},
        with_message_id=False,
    ),
    lambda n: _json_case("unknown_type", n, owes_outcome=False, type="study.send.exploded"),
    lambda n: _json_case("wrong_content_type", n, owes_outcome=False, content_type="text/plain"),
    _forged_blume_published,
    _forged_completed,
)


def event_key(case: PoisonCase) -> tuple[str, str] | None:
    """(source, id) of the event a poison message carries, if its body names them."""
    try:
        event = json.loads(case.message.body)
    except (ValueError, RecursionError):
        return None
    if isinstance(event, dict) and "source" in event and "id" in event:
        return str(event["source"]), str(event["id"])
    return None


def poison_cases(count: int) -> list[PoisonCase]:
    """``count`` messages cycling through every kind (30 covers each kind twice)."""
    return [CASES[number % len(CASES)](number) for number in range(count)]
