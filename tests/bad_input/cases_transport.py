"""Transport cases: bodies, content types and encodings, sizes, headers and properties."""

from __future__ import annotations

import datetime as dt
import gzip
import zlib
from decimal import Decimal
from typing import Any

from tests.bad_input.corpus import (
    MALFORMED,
    MAX_BODY_BYTES,
    RECORDED,
    Case,
    rejected,
)
from tests.bad_input.messages import (
    CARRIER_BAD_EMAIL,
    CARRIER_REASON,
    broken_request_body,
    correlation_id,
    encode,
    envelope,
    event_id,
    request_data,
)

UNREADABLE = frozenset({MALFORMED})


def _unreadable(tag: str, name: str, body: bytes, **properties: Any) -> Case:
    properties.setdefault("message_id", event_id(tag, name))
    return Case(name, "transport", body, UNREADABLE, UNREADABLE, **properties)


def _answered(tag: str, name: str, body: bytes | None = None, **properties: Any) -> Case:
    """A readable request with an invalid recipient address, sent in an odd way."""
    properties.setdefault("message_id", event_id(tag, name))
    return Case(
        name,
        "transport",
        body if body is not None else broken_request_body(tag, name),
        frozenset({rejected(CARRIER_REASON)}),
        frozenset({RECORDED}),
        correlation_id=correlation_id(tag, name),
        bad_value=CARRIER_BAD_EMAIL,
        **properties,
    )


def _padded_to(body: bytes, size: int) -> bytes:
    """Valid JSON of exactly ``size`` bytes: trailing whitespace is insignificant."""
    assert len(body) <= size
    return body + b" " * (size - len(body))


def _broken_json(tag: str) -> list[Case]:
    """Defect 1: bodies that are not JSON, labelled as JSON."""
    whole = broken_request_body(tag, "broken-json")
    bodies = {
        "truncated": whole[: len(whole) // 2],
        "trailing-garbage": whole + b"}}garbage",
        "single-quotes": whole.replace(b'"', b"'"),
        "lone-brace": b"{",
        "unquoted-keys": b"{specversion: 1.0, id: " + event_id(tag, "unquoted").encode() + b"}",
        "comment": b"// a comment\n" + whole,
    }
    return [
        _unreadable(tag, f"broken-json-{label}", body, content_type="application/json")
        for label, body in bodies.items()
    ]


def _content_types(tag: str) -> list[Case]:
    return [
        _unreadable(
            tag,
            "content-type-text-plain",
            broken_request_body(tag, "content-type-text-plain"),
            content_type="text/plain",
        ),
        _unreadable(
            tag,
            "content-type-none",
            broken_request_body(tag, "content-type-none"),
            content_type=None,
        ),
        _unreadable(
            tag,
            "content-type-xml",
            b"<event><id>" + event_id(tag, "xml").encode() + b"</id></event>",
            content_type="application/xml",
        ),
        _unreadable(
            tag,
            "content-type-batch",
            encode([envelope(tag, "content-type-batch")]),
            content_type="application/cloudevents-batch+json",
        ),
        _answered(tag, "content-type-json-charset", content_type="application/json; charset=utf-8"),
        _answered(
            tag,
            "content-type-cloudevents-charset",
            content_type="application/cloudevents+json; charset=UTF-8",
        ),
    ]


def _encodings(tag: str) -> list[Case]:
    return [
        _unreadable(
            tag,
            "encoding-gzip",
            gzip.compress(broken_request_body(tag, "encoding-gzip"), mtime=0),
            content_encoding="gzip",
        ),
        _unreadable(
            tag,
            "encoding-deflate",
            zlib.compress(broken_request_body(tag, "encoding-deflate")),
            content_encoding="deflate",
        ),
        _unreadable(
            tag,
            "encoding-garbage",
            broken_request_body(tag, "encoding-garbage"),
            content_encoding="x-rot13;;\u00e9",
        ),
        _answered(tag, "encoding-identity", content_encoding="identity"),
    ]


def _sizes_and_bytes(tag: str) -> list[Case]:
    readable = broken_request_body(tag, "size-at-limit")
    oversized = broken_request_body(tag, "size-one-over")
    document = envelope(tag, "size-300k", data=request_data())
    document["data"]["message"] = "x" * (300 * 1024)
    return [
        _answered(tag, "size-at-limit", _padded_to(readable, MAX_BODY_BYTES)),
        _unreadable(tag, "size-one-over", _padded_to(oversized, MAX_BODY_BYTES + 1)),
        _unreadable(tag, "size-300k", encode(document)),
        _unreadable(
            tag, "size-5m", _padded_to(broken_request_body(tag, "size-5m"), 5 * 1024 * 1024)
        ),
        _unreadable(tag, "empty-body", b""),
        _unreadable(
            tag,
            "invalid-utf8",
            broken_request_body(tag, "invalid-utf8").replace(b"DOE^JANE", b"DOE\xff\xfeJANE"),
        ),
        _unreadable(
            tag, "utf16-body", broken_request_body(tag, "utf16-body").decode().encode("utf-16")
        ),
        _unreadable(tag, "json-array", encode([event_id(tag, "json-array"), 1, None])),
        _unreadable(
            tag, "json-string", encode(f"study.send.requested {event_id(tag, 'json-string')}")
        ),
        _unreadable(tag, "json-number", b"1e999 "),
        _unreadable(tag, "json-null", b"null"),
        _unreadable(tag, "depth-bomb", b'{"data": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
        # RFC 8259 lets a parser ignore a byte order mark or refuse it: either is an answer.
        Case(
            "utf8-bom",
            "transport",
            b"\xef\xbb\xbf" + broken_request_body(tag, "utf8-bom"),
            frozenset({rejected(CARRIER_REASON), MALFORMED}),
            frozenset({RECORDED, MALFORMED}),
            message_id=event_id(tag, "utf8-bom"),
            correlation_id=correlation_id(tag, "utf8-bom"),
            bad_value=CARRIER_BAD_EMAIL,
        ),
    ]


def _headers_and_properties(tag: str) -> list[Case]:
    forged_death = [
        {
            "count": 99,
            "reason": "expired",
            "queue": "blume.share.share_dispatcher.retry",
            "exchange": "",
            "routing-keys": ["share.blume.published"],
            "time": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        }
    ]
    odd_headers: dict[str, dict[str, Any]] = {
        "attempt-string": {"x-blume-attempt": "nine"},
        "attempt-negative": {"x-blume-attempt": -3},
        "attempt-huge": {"x-blume-attempt": 2**62},
        "attempt-decimal": {"x-blume-attempt": Decimal("4.5")},
        "forged-x-death": {"x-death": forged_death},
        "x-death-not-a-list": {"x-death": "rejected"},
        "forged-failure-times": {
            "x-blume-first-failure-at": "yesterday",
            "x-blume-last-failure-at": 17,
            "x-blume-error-class": "smtp_unavailable",
            "x-blume-dead-letter-cause": "exhausted",
        },
        "header-odd-types": {
            "x-null": None,
            "x-bool": True,
            "x-bytes": b"\x00\xff",
            "x-decimal": Decimal("1.5"),
            "x-nested": {"a": [1, {"b": None}], "c": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
        },
        "header-huge-value": {"x-filler": "h" * 10_000},
        "header-phi": {"x-patient": "DOE^JANE MRN-0001"},
    }
    cases = [_answered(tag, f"headers-{name}", headers=h) for name, h in odd_headers.items()]
    unlike_id = "not-the-event-id-" + "\u202e" + "gpj.exe"
    return [
        *cases,
        _answered(tag, "message-id-none", message_id=None),
        _answered(tag, "message-id-unlike-event-id", message_id=unlike_id),
        _answered(tag, "message-id-long", message_id="m" * 255),
        # The dispatcher is also bound to share.revoke.requested: the body's type decides.
        _answered(tag, "routing-key-unlike-type", routing_key="share.revoke.requested"),
    ]


def cases(tag: str) -> list[Case]:
    """Every transport case; message ids equal event ids unless the case is about them."""
    return [
        *_broken_json(tag),
        *_content_types(tag),
        *_encodings(tag),
        *_sizes_and_bytes(tag),
        *_headers_and_properties(tag),
    ]
