"""Data cases: every field of the pinned ``study.send.requested`` example, broken.

Missing, null, mistyped, over-long, injection strings, PHI where it does not belong, depth
and size bombs, duplicate keys, NaN and Infinity, numbers as strings. The envelope is valid:
each is answered with the reason code of the field it breaks.
"""

from __future__ import annotations

from typing import Any, Final

from tests.bad_input.corpus import MALFORMED, RECORDED, Case, rejected
from tests.bad_input.messages import (
    MISSING,
    correlation_id,
    encode,
    envelope,
    event_id,
    request_data,
)

SQL: Final = "x' OR '1'='1'; DROP TABLE dispatcher_shares; --"
SCRIPT: Final = "<script>alert(document.cookie)</script>"
TEMPLATE: Final = "{{ config.__class__.__init__.__globals__ }}"
PHI_NOTE: Final = "Patient DOE^JANE, MRN-0001, born 1980-01-02, SIN 046 454 286. "

# (case name, changes as request_data keywords, reason code, the offending value to never echo)
FIELD_CASES: Final[tuple[tuple[str, dict[str, Any], str, str | None], ...]] = (
    ("method-missing", {"method": MISSING}, "unknown_method", None),
    ("method-null", {"method": None}, "unknown_method", None),
    ("method-fax", {"method": "fax-to-" + SQL}, "unknown_method", SQL),
    ("method-number", {"method": 1}, "unknown_method", None),
    ("tenant-id-missing", {"tenant_id": MISSING}, "unknown_tenant", None),
    ("tenant-id-traversal", {"tenant_id": "../../etc/passwd"}, "unknown_tenant", "etc/passwd"),
    ("tenant-id-300", {"tenant_id": "t" * 300}, "unknown_tenant", "t" * 300),
    ("tenant-id-sql", {"tenant_id": SQL}, "unknown_tenant", SQL),
    ("study-missing", {"study": MISSING}, "invalid_study", None),
    ("study-string", {"study": "CT CHEST of DOE^JANE"}, "invalid_study", "DOE^JANE"),
    ("study-uid-missing", {"study.study_instance_uid": MISSING}, "invalid_study_uid", None),
    ("study-uid-65", {"study.study_instance_uid": "1." + "2" * 63}, "invalid_study_uid", None),
    (
        "study-uid-shell",
        {"study.study_instance_uid": "1.2.840; rm -rf /"},
        "invalid_study_uid",
        "rm -rf /",
    ),
    ("study-uid-number", {"study.study_instance_uid": 1.2840}, "invalid_study_uid", None),
    ("study-date-words", {"study.study_date": "last Tuesday"}, "invalid_study", "last Tuesday"),
    ("accession-empty", {"study.accession_number": ""}, "invalid_study", None),
    ("modalities-huge", {"study.modalities": ["CT"] * 10_000}, "invalid_study", None),
    ("modalities-deep", {"study.modalities": [[[[[[[[[["CT"]]]]]]]]]] * 9}, "invalid_study", None),
    ("modalities-lowercase", {"study.modalities": ["ct"]}, "invalid_study", None),
    ("description-10k", {"study.description": PHI_NOTE * 200}, "invalid_study", PHI_NOTE),
    ("patient-missing", {"study.patient": MISSING}, "invalid_patient", None),
    ("patient-null", {"study.patient": None}, "invalid_patient", None),
    ("mrn-sql", {"study.patient.mrn": SQL}, "invalid_patient", SQL),
    ("mrn-number", {"study.patient.mrn": 1234}, "invalid_patient", None),
    ("patient-name-nul", {"study.patient.name": "DOE^JANE\u0000"}, "invalid_patient", None),
    ("patient-name-10k", {"study.patient.name": "DOE^JANE" * 1250}, "invalid_patient", None),
    (
        "birth-date-impossible",
        {"study.patient.birth_date": "1980-02-30"},
        "invalid_patient",
        "1980-02-30",
    ),
    ("sender-missing", {"sender": MISSING}, "invalid_sender", None),
    ("sender-email-script", {"sender.email": SCRIPT}, "invalid_sender", SCRIPT),
    ("sender-user-id-1000", {"sender.user_id": "u" * 1000}, "invalid_sender", "u" * 1000),
    ("recipient-missing", {"recipient": MISSING}, "missing_recipient", None),
    ("recipient-null", {"recipient": None}, "missing_recipient", None),
    (
        "recipient-email-crlf",
        {"recipient.email": "bob@clinic.example\r\nBcc: all@evil.example"},
        "invalid_recipient_email",
        "all@evil.example",
    ),
    (
        "recipient-email-300",
        {"recipient.email": "b" * 290 + "@clinic.example"},
        "invalid_recipient_email",
        "b" * 290,
    ),
    (
        "recipient-email-script",
        {"recipient.email": SCRIPT + "@clinic.example"},
        "invalid_recipient_email",
        SCRIPT,
    ),
    ("recipient-email-number", {"recipient.email": 42}, "invalid_recipient_email", None),
    ("recipient-name-empty", {"recipient.name": ""}, "invalid_recipient_name", None),
    (
        "recipient-name-template",
        {"recipient.name": TEMPLATE + "\n"},
        "invalid_recipient_name",
        TEMPLATE,
    ),
    ("recipient-extra-phi", {"recipient.ssn": "046-454-286"}, "malformed_request", "046-454-286"),
    (
        "blume-without-account",
        {"method": "blume", "recipient": MISSING},
        "missing_patient_account",
        None,
    ),
    ("message-2001", {"message": "m" * 2001}, "message_too_long", None),
    ("message-phi-10k", {"message": PHI_NOTE * 200}, "message_too_long", PHI_NOTE),
    ("expiry-zero", {"expires_in_hours": 0}, "invalid_expiry", None),
    ("expiry-negative", {"expires_in_hours": -72}, "invalid_expiry", None),
    ("expiry-words", {"expires_in_hours": "seventy-two"}, "invalid_expiry", "seventy-two"),
    ("expiry-exponent-string", {"expires_in_hours": "1e3"}, "invalid_expiry", None),
    ("expiry-fraction", {"expires_in_hours": 1.5}, "invalid_expiry", None),
    ("expiry-huge", {"expires_in_hours": 10**30}, "expiry_exceeds_policy", None),
    ("expiry-as-string-over-policy", {"expires_in_hours": "500"}, "expiry_exceeds_policy", None),
    ("locale-de", {"locale": "de-DE"}, "unsupported_locale", None),
    ("locale-null", {"locale": None}, "unsupported_locale", None),
    ("locale-10k", {"locale": "en-CA" * 2000}, "unsupported_locale", None),
    ("extra-prototype", {"__proto__": {"is_admin": True}}, "malformed_request", None),
)


def _field_case(tag: str, name: str, changes: dict[str, Any], reason: str, bad: str | None) -> Case:
    return Case(
        name,
        "data",
        encode(envelope(tag, name, data=request_data(changes))),
        frozenset({rejected(reason)}),
        frozenset({RECORDED}),
        message_id=event_id(tag, name),
        correlation_id=correlation_id(tag, name),
        bad_value=bad,
    )


def _duplicate_keys(tag: str) -> Case:
    """Both copies of the address are invalid, so first-wins and last-wins parsers agree."""
    name = "duplicate-keys"
    body = encode(envelope(tag, name)).replace(
        b'"email": "bob.jones@clinic.example"',
        b'"email": "first@@clinic.example", "email": "second@@clinic.example"',
    )
    return Case(
        name,
        "data",
        body,
        frozenset({rejected("invalid_recipient_email")}),
        frozenset({RECORDED}),
        message_id=event_id(tag, name),
        correlation_id=correlation_id(tag, name),
        bad_value="second@@clinic.example",
    )


def _not_json(tag: str, name: str, value: float) -> Case:
    """``NaN`` and ``Infinity`` are not JSON (RFC 8259), though Python writes them."""
    body = encode(envelope(tag, name, data=request_data({"expires_in_hours": value})))
    return Case(
        name,
        "data",
        body,
        frozenset({MALFORMED}),
        frozenset({MALFORMED}),
        message_id=event_id(tag, name),
    )


def _lone_surrogate(tag: str) -> Case:
    """A lone UTF-16 surrogate escape is JSON syntax but no character (RFC 8259 leaves the
    outcome open): answered at the patient's name, or refused as unreadable."""
    name = "patient-name-lone-surrogate"
    body = encode(envelope(tag, name)).replace(b"DOE^JANE", b"DOE\\ud800JANE")
    return Case(
        name,
        "data",
        body,
        frozenset({rejected("invalid_patient"), MALFORMED}),
        frozenset({RECORDED, MALFORMED}),
        message_id=event_id(tag, name),
        correlation_id=correlation_id(tag, name),
    )


def cases(tag: str) -> list[Case]:
    return [
        *(_field_case(tag, *spec) for spec in FIELD_CASES),
        _duplicate_keys(tag),
        _not_json(tag, "expiry-nan", float("nan")),
        _not_json(tag, "expiry-infinity", float("inf")),
        _not_json(tag, "expiry-minus-infinity", float("-inf")),
        _lone_surrogate(tag),
    ]
