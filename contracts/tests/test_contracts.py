"""Contract artefacts: schemas, AsyncAPI document, examples and the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from blume_contracts.artefacts import EXAMPLES_DIR, rendered
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import (
    _CARRIED_FROM_LINK_REQUEST,
    _CARRIED_FROM_SEND_REQUEST,
    Recipient,
    ShareLinkIssued,
    ShareLinkRequested,
    StudySendRequested,
)
from blume_contracts.registry import EVENTS, SENSITIVE_FIELDS, protect_for_audit
from blume_contracts.sensitivity import Sensitivity
from pydantic import ValidationError


@pytest.mark.parametrize("path", sorted(rendered()), ids=lambda p: p.name)
def test_checked_in_artefact_is_current(path: Path) -> None:
    """Each generated schema and the AsyncAPI document match the models (run artefacts if not)."""
    expected = rendered()[path]
    assert path.exists(), f"{path.name} missing: run python -m blume_contracts.artefacts"
    assert path.read_text(encoding="utf-8") == expected, (
        f"{path.name} is stale: run python -m blume_contracts.artefacts"
    )


@pytest.mark.parametrize("event_type", sorted(EVENTS))
def test_every_event_type_has_a_valid_example(event_type: str) -> None:
    """Each registered event type has an example message that validates against its model."""
    example = json.loads((EXAMPLES_DIR / f"{event_type}.json").read_text())
    event = CloudEvent[EVENTS[event_type].model].model_validate(example)  # type: ignore[name-defined]
    assert event.type == event_type


def test_examples_cover_exactly_the_registry() -> None:
    """No example exists for an unregistered type, and none is missing."""
    assert {p.stem for p in EXAMPLES_DIR.glob("*.json")} == set(EVENTS)


def test_every_event_type_has_producer_and_consumer() -> None:
    """The registry names at least one producer and one consumer per type, audit included."""
    for spec in EVENTS.values():
        assert spec.producers, spec.event_type
        assert "audit_sink" in spec.consumers, spec.event_type


def test_sensitive_markings_reach_the_registry() -> None:
    """Marked fields are collected: the sealed link is secret, patient fields are PHI."""
    assert SENSITIVE_FIELDS["sealed_link"] is Sensitivity.SECRET
    assert SENSITIVE_FIELDS["mrn"] is Sensitivity.PHI
    assert SENSITIVE_FIELDS["birth_date"] is Sensitivity.PHI


def test_audit_protection_fingerprints_secrets_only() -> None:
    """Secret values are replaced by fingerprints; other values are kept as they are."""
    example = json.loads((EXAMPLES_DIR / "share.link.issued.json").read_text())["data"]
    protected = protect_for_audit(example)
    assert protected["sealed_link"].startswith("sha256:")
    assert example["sealed_link"] not in json.dumps(protected)
    assert protected["recipient"] == example["recipient"]


def _request(**changes: object) -> dict[str, object]:
    data = json.loads((EXAMPLES_DIR / "study.send.requested.json").read_text())["data"]
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("changes", "location"),
    [
        ({"method": "fax"}, "method"),
        ({"locale": "de-DE"}, "locale"),
        ({"expires_in_hours": 0}, "expires_in_hours"),
        ({"message": "x" * 2001}, "message"),
        (
            {"recipient": {"name": "Bob", "email": "bob@clinic.example\r\nBcc: x@y.example"}},
            "recipient.email",
        ),
        ({"recipient": {"name": "Bob\nBcc", "email": "bob@clinic.example"}}, "recipient.name"),
    ],
)
def test_request_rejects_bad_fields(changes: dict[str, object], location: str) -> None:
    """Bad values are refused at the field that holds them."""
    with pytest.raises(ValidationError) as caught:
        StudySendRequested.model_validate(_request(**changes))
    assert location in {".".join(map(str, e["loc"])) for e in caught.value.errors()}


@pytest.mark.parametrize("uid", ["1.2.3.a", "1..2", "01.2", "1." + "2" * 63, "1.2.3 ", "abc"])
def test_study_uid_syntax(uid: str) -> None:
    """A study UID must be digits and dots, no leading zeros, at most 64 characters."""
    study = _request()["study"]
    assert isinstance(study, dict)
    with pytest.raises(ValidationError):
        StudySendRequested.model_validate(_request(study={**study, "study_instance_uid": uid}))


def test_recipient_address_is_normalised() -> None:
    """A valid address passes; its domain is normalised to lower case."""
    assert Recipient(name="Bob", email="Bob@Clinic.EXAMPLE").email == "Bob@clinic.example"


def test_link_issued_carries_every_field_it_shares_with_its_request() -> None:
    """share.link.issued repeats each field it has in common with share.link.requested."""
    shared = set(ShareLinkIssued.model_fields) & set(ShareLinkRequested.model_fields)
    assert set(_CARRIED_FROM_LINK_REQUEST) == shared


def test_link_request_carries_every_field_it_shares_with_the_send_request() -> None:
    """share.link.requested repeats each field it has in common with study.send.requested."""
    shared = set(ShareLinkRequested.model_fields) & set(StudySendRequested.model_fields)
    assert set(_CARRIED_FROM_SEND_REQUEST) == shared
