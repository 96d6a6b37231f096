"""Request rules: each contract violation maps to its reason code; tenant policy applies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from blume_contracts.artefacts import EXAMPLES_DIR
from blume_contracts.events import RejectionReason as R
from blume_contracts.events import StudySendRequested
from blume_runtime.tenants import PolicyError, TenantPolicy, load_policies
from blume_share_dispatcher.rules import (
    Rejection,
    check_policy,
    expiry,
    rejection_for,
)
from pydantic import ValidationError

EXAMPLE = json.loads((EXAMPLES_DIR / "study.send.requested.json").read_text())


def request_data(**changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(EXAMPLE["data"]))
    for dotted, value in changes.items():
        target = data
        *path, last = dotted.split("__")
        for part in path:
            target = target[part]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return data


def reason_for(data: Any) -> Rejection:
    with pytest.raises(ValidationError) as caught:
        StudySendRequested.model_validate(data)
    return rejection_for(caught.value)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"method": "carrier_pigeon"}, R.UNKNOWN_METHOD),
        ({"recipient__email": "not-an-address"}, R.INVALID_RECIPIENT_EMAIL),
        (
            {"recipient__email": "bob@clinic.example\r\nBcc: evil@x.example"},
            R.INVALID_RECIPIENT_EMAIL,
        ),
        ({"recipient__name": "Bob\x07"}, R.INVALID_RECIPIENT_NAME),
        ({"recipient": ...}, R.MISSING_RECIPIENT),
        ({"study__study_instance_uid": "1.2.abc"}, R.INVALID_STUDY_UID),
        ({"study__study_instance_uid": "1." + "2" * 70}, R.INVALID_STUDY_UID),
        ({"study__patient__name": "DOE\nJANE"}, R.INVALID_PATIENT),
        ({"sender__email": "alice"}, R.INVALID_SENDER),
        ({"locale": "en-US"}, R.UNSUPPORTED_LOCALE),
        ({"expires_in_hours": -1}, R.INVALID_EXPIRY),
        ({"expires_in_hours": 0}, R.INVALID_EXPIRY),
        ({"message": "x" * 2001}, R.MESSAGE_TOO_LONG),
        ({"unexpected": 1}, R.MALFORMED_REQUEST),
    ],
)
def test_contract_violation_maps_to_reason(changes: dict[str, Any], reason: R) -> None:
    """Each kind of bad field yields its own machine-readable reason code."""
    assert reason_for(request_data(**changes)).reason is reason


def test_non_object_data_is_malformed() -> None:
    """Data that is not an object at all is a malformed request."""
    assert reason_for([1, 2, 3]).reason is R.MALFORMED_REQUEST


def test_rejection_message_never_echoes_the_value() -> None:
    """The human message names the field, never the offending value."""
    rejection = reason_for(request_data(recipient__email="secret-patient-hint@@x"))
    assert "secret-patient-hint" not in rejection.message
    assert rejection.field == "recipient.email"


POLICIES = {"demo-hospital": TenantPolicy(display_name="Demo Hospital")}


def test_policy_accepts_within_maximum() -> None:
    """A request within the tenant's maximum gets the tenant's policy back."""
    request = StudySendRequested.model_validate(request_data(expires_in_hours=168))
    assert check_policy(request, "demo-hospital", POLICIES) == POLICIES["demo-hospital"]


@pytest.mark.parametrize(
    ("changes", "event_tenant", "reason"),
    [
        ({"expires_in_hours": 169}, "demo-hospital", R.EXPIRY_EXCEEDS_POLICY),
        ({"tenant_id": "nowhere"}, "nowhere", R.UNKNOWN_TENANT),
        ({}, "other-tenant", R.TENANT_MISMATCH),
    ],
)
def test_policy_rejections(changes: dict[str, Any], event_tenant: str, reason: R) -> None:
    """Tenant-level rules reject with their own reason codes."""
    request = StudySendRequested.model_validate(request_data(**changes))
    verdict = check_policy(request, event_tenant, POLICIES)
    assert isinstance(verdict, Rejection)
    assert verdict.reason is reason


def test_default_expiry_comes_from_policy() -> None:
    """Without expires_in_hours the link lives for the tenant's default."""
    request = StudySendRequested.model_validate(request_data(expires_in_hours=...))
    start = datetime(2026, 11, 28, tzinfo=UTC)
    assert expiry(request, POLICIES["demo-hospital"], start) == start + timedelta(hours=72)


def test_bundled_policy_has_demo_hospital() -> None:
    """The bundled default: 72 hours by default, 168 at most, no recipient authentication."""
    policy = load_policies(None)["demo-hospital"]
    assert (policy.link_expiry_default_hours, policy.link_expiry_max_hours) == (72, 168)
    assert policy.recipient_auth == "none"


@pytest.mark.parametrize(
    "text",
    ["tenants: [", "tenants:\n  t:\n    display_name: X\n    link_expiry_max_hours: -1\n", "{}"],
    ids=["yaml-syntax", "negative-max", "no-tenants"],
)
def test_bad_policy_file_fails_clearly(tmp_path: Path, text: str) -> None:
    """A broken policy file stops the dispatcher with a message naming the file."""
    path = tmp_path / "tenants.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=str(path)):
        load_policies(path)


def test_missing_policy_file_fails_clearly(tmp_path: Path) -> None:
    """A policy file that does not exist is reported, not ignored."""
    with pytest.raises(PolicyError, match="cannot read"):
        load_policies(tmp_path / "absent.yaml")
