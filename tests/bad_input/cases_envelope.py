"""Envelope cases: each CloudEvents attribute missing, mistyped, empty, over-long or odd.

All are ``study.send.requested``. Without a usable ``specversion`` (1.0), ``id`` and
``source`` (the dedupe key: printable ASCII, 1 to 256 characters) and ``type``, the message
is not a CloudEvent even leniently (``malformed``); anything else wrong
with the envelope is answered ``invalid_envelope``; an envelope that is valid, however
odd, is answered by its data. The pinned envelope defaults ``specversion`` and
``datacontenttype`` when they are missing.
"""

from __future__ import annotations

from typing import Any, Final

from tests.bad_input.corpus import (
    INVALID_ENVELOPE,
    MALFORMED,
    RECORDED,
    Case,
    Outcome,
    rejected,
)
from tests.bad_input.messages import (
    CARRIER_BAD_EMAIL,
    CARRIER_REASON,
    MISSING,
    correlation_id,
    encode,
    envelope,
    event_id,
    request_data,
)

CONTROL: Final = "\u0000\r\nX-Injected: 1"
RTL_OVERRIDE: Final = "\u202e"
CYRILLIC_E: Final = "\u0435"
LONG: Final = {"100": 100, "300": 300, "10k": 10_000}


def _case(
    tag: str,
    name: str,
    expect: Outcome,
    audit: frozenset[Outcome],
    data: dict[str, Any] | None = None,
    bad_value: str | None = None,
    **attributes: Any,
) -> Case:
    document = envelope(tag, name, data=data, **attributes)
    correlation = document.get("correlationid")
    usable = correlation == correlation_id(tag, name)
    return Case(
        name,
        "envelope",
        encode(document),
        frozenset({expect}),
        audit,
        message_id=event_id(tag, name),
        correlation_id=correlation if usable else None,
        bad_value=bad_value,
    )


def _not_a_cloudevent(tag: str, name: str, **attributes: Any) -> Case:
    return _case(tag, name, MALFORMED, frozenset({MALFORMED}), **attributes)


def _invalid_envelope(tag: str, name: str, bad_value: str | None = None, **attrs: Any) -> Case:
    # The runtime may record a lenient-only request in the audit store or refuse it there.
    audit = frozenset({RECORDED, MALFORMED})
    return _case(tag, name, rejected(INVALID_ENVELOPE), audit, bad_value=bad_value, **attrs)


def _answered_by_data(tag: str, name: str, **attributes: Any) -> Case:
    """A valid (if odd) envelope over data with an invalid recipient address."""
    data = request_data({"recipient.email": CARRIER_BAD_EMAIL})
    return _case(
        tag,
        name,
        rejected(CARRIER_REASON),
        frozenset({RECORDED}),
        data=data,
        bad_value=CARRIER_BAD_EMAIL,
        **attributes,
    )


def _identity_attributes(tag: str) -> list[Case]:
    """specversion, id, source, type: the dedupe key and the route."""
    return [
        _not_a_cloudevent(tag, "id-missing", id=MISSING),
        _not_a_cloudevent(tag, "id-empty", id=""),
        _not_a_cloudevent(tag, "id-number", id=4_242),
        _not_a_cloudevent(tag, "source-missing", source=MISSING),
        _not_a_cloudevent(tag, "source-empty", source=""),
        _not_a_cloudevent(tag, "source-object", source={"uri": "/omegaai"}),
        _not_a_cloudevent(tag, "type-missing", type=MISSING),
        _not_a_cloudevent(tag, "type-number", type=7),
        _not_a_cloudevent(tag, "type-homoglyph", type=f"study.send.requ{CYRILLIC_E}sted"),
        _not_a_cloudevent(tag, "type-over-long", type="study.send.requested" + "d" * 300),
        # The pinned envelope defaults a missing specversion to 1.0: answered by its data.
        _answered_by_data(tag, "specversion-missing", specversion=MISSING),
        _not_a_cloudevent(tag, "specversion-number", specversion=1.0),
        _not_a_cloudevent(tag, "specversion-0.3", specversion="0.3"),
        _not_a_cloudevent(tag, "id-300", id=event_id(tag, "id-300").ljust(300, "i")),
        _not_a_cloudevent(tag, "id-10k", id=event_id(tag, "id-10k").ljust(10_000, "i")),
        _not_a_cloudevent(tag, "id-control", id=event_id(tag, "id-control") + CONTROL),
        _not_a_cloudevent(tag, "source-10k", source="/omegaai/" + "s" * 10_000),
        _not_a_cloudevent(tag, "source-rtl", source=f"/omegaai/{RTL_OVERRIDE}lmth.exe"),
        _not_a_cloudevent(tag, "source-unicode", source=f"/omeg{CYRILLIC_E}ai/send-drawer"),
    ]


def _tenant_and_correlation(tag: str) -> list[Case]:
    broken = request_data({"recipient.email": CARRIER_BAD_EMAIL})
    return [
        _invalid_envelope(tag, "tenantid-missing", tenantid=MISSING),
        _invalid_envelope(tag, "tenantid-empty", tenantid=""),
        _invalid_envelope(tag, "tenantid-number", tenantid=12),
        _invalid_envelope(tag, "tenantid-300", tenantid="t" * LONG["300"]),
        _invalid_envelope(tag, "tenantid-10k", tenantid="t" * LONG["10k"]),
        _invalid_envelope(tag, "tenantid-control", tenantid="demo-hospital" + CONTROL),
        _invalid_envelope(tag, "tenantid-homoglyph", tenantid=f"d{CYRILLIC_E}mo-hospital"),
        # Defect 4 as reported: a strictly valid 100-character tenant over broken data.
        _answered_by_data(tag, "tenantid-100-broken-data", tenantid="t" * LONG["100"]),
        _case(
            tag,
            "tenantid-100-valid-data",
            rejected("tenant_mismatch"),
            frozenset({RECORDED}),
            tenantid="t" * LONG["100"],
        ),
        _case(
            tag,
            "tenantid-unlike-data",
            rejected("tenant_mismatch"),
            frozenset({RECORDED}),
            tenantid="other-hospital",
        ),
        _invalid_envelope(tag, "correlationid-missing", correlationid=MISSING),
        _invalid_envelope(tag, "correlationid-empty", correlationid=""),
        _invalid_envelope(tag, "correlationid-10k", correlationid="c" * LONG["10k"]),
        _invalid_envelope(tag, "correlationid-nul", correlationid="corr\u0000-1"),
        _invalid_envelope(tag, "correlationid-list", correlationid=["corr-1", "corr-2"]),
        # A valid token holding an address: answered, and the address never logged.
        _answered_by_data(
            tag, "correlationid-holds-email", correlationid="bob.jones@clinic.example"
        ),
        _data_not_an_object(tag, "data-null", None),
        _data_not_an_object(tag, "data-string", "DOE^JANE MRN-0001"),
        _data_not_an_object(tag, "data-list", [broken]),
    ]


def _data_not_an_object(tag: str, name: str, value: Any) -> Case:
    document = envelope(tag, name)
    document["data"] = value
    return Case(
        name,
        "envelope",
        encode(document),
        frozenset({rejected("malformed_request")}),
        frozenset({RECORDED}),
        message_id=event_id(tag, name),
        correlation_id=correlation_id(tag, name),
        bad_value=value if isinstance(value, str) else None,
    )


def _data_missing(tag: str) -> Case:
    """CloudEvents makes ``data`` optional, the pinned envelope requires it: answered either
    as an invalid envelope or as a request without content."""
    document = envelope(tag, "data-missing")
    del document["data"]
    return Case(
        "data-missing",
        "envelope",
        encode(document),
        frozenset({rejected(INVALID_ENVELOPE), rejected("malformed_request")}),
        frozenset({RECORDED, MALFORMED}),
        message_id=event_id(tag, "data-missing"),
        correlation_id=correlation_id(tag, "data-missing"),
    )


def _time_and_the_rest(tag: str) -> list[Case]:
    return [
        _invalid_envelope(tag, "time-missing", time=MISSING),
        _invalid_envelope(tag, "time-naive", time="2026-11-28T14:00:00"),
        _invalid_envelope(tag, "time-garbage", time="yesterday at noon", bad_value="yesterday"),
        _invalid_envelope(tag, "time-impossible", time="2026-02-30T25:61:00Z"),
        _invalid_envelope(tag, "datacontenttype-xml", datacontenttype="application/xml"),
        _answered_by_data(tag, "datacontenttype-missing", datacontenttype=MISSING),
        _invalid_envelope(
            tag,
            "extra-attributes",
            patientname="DOE^JANE",
            x_evil={"$where": "sleep(1000)", "mrn": "MRN-0001"},
        ),
        _data_missing(tag),
    ]


def cases(tag: str) -> list[Case]:
    return [*_identity_attributes(tag), *_tenant_and_correlation(tag), *_time_and_the_rest(tag)]
