"""Record-store rules against plain accounts: eligibility, lock box, FHIR, account import."""

from __future__ import annotations

import json
from datetime import date

import pytest
from blume_contracts.consent import external_links_withheld, portal_verdict
from blume_contracts.events import BlumeStudy
from blume_publisher.accounts import ImportFileError, mask_email, parse_accounts
from blume_publisher.imaging import imaging_study
from blume_publisher.models import AccountStatus, PatientAccount
from blume_publisher.records import new_entry_id
from fhir.resources.imagingstudy import ImagingStudy


def account(**changes: object) -> PatientAccount:
    values: dict[str, object] = {
        "blume_patient_id": "bp-1",
        "tenant_id": "demo-hospital",
        "mrn": "MRN-1",
        "email": "jane@mail.example",
        "locale": "en-CA",
        "email_notifications": True,
        "status": AccountStatus.ACTIVE,
    }
    values.update(changes)
    return PatientAccount.model_validate(values)


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (None, "patient_not_enrolled"),
        (account(status=AccountStatus.INACTIVE), "patient_not_enrolled"),
        (account(mrn="MRN-2"), "patient_mismatch"),
        (account(withhold_portal=True), "consent_directive"),
    ],
    ids=["no-account", "inactive", "other-person", "withhold-portal"],
)
def test_portal_verdict_withholds(candidate: PatientAccount | None, reason: str) -> None:
    """Each privacy and safety case withholds publication with its own reason."""
    verdict = portal_verdict(candidate, "MRN-1")
    assert verdict is not None
    assert verdict.reason == reason


def test_portal_verdict_allows_an_eligible_account() -> None:
    """An active account of the study's patient, with no directive, may receive the study."""
    assert portal_verdict(account(), "MRN-1") is None


def test_mrn_match_is_exact() -> None:
    """An MRN differing only in case is another patient's: never publish on a near match."""
    verdict = portal_verdict(account(mrn="mrn-1"), "MRN-1")
    assert verdict is not None
    assert verdict.reason == "patient_mismatch"


def test_lock_box_applies_if_any_account_sets_it() -> None:
    """withhold_external_links on any of the patient's accounts locks external shares."""
    assert external_links_withheld([account(), account(withhold_external_links=True)])
    assert not external_links_withheld([account(withhold_portal=True)])
    assert not external_links_withheld([])


def test_imaging_study_is_valid_fhir_r5() -> None:
    """The entry's resource validates as an R5 ImagingStudy with the fields the portal shows."""
    resource = imaging_study(
        BlumeStudy(
            study_instance_uid="1.2.840.1.2",
            patient_mrn="MRN-1",
            study_date=date(2026, 11, 20),
            modalities=["CT", "PT"],
            description="CT CHEST",
        ),
        "bp-1",
    )
    study = ImagingStudy.model_validate(resource)
    assert study.status == "available"
    assert study.subject.reference == "Patient/bp-1"
    assert study.identifier[0].value == "urn:oid:1.2.840.1.2"
    assert [m.coding[0].code for m in study.modality] == ["CT", "PT"]
    assert str(study.started) == "2026-11-20"
    assert "MRN-1" not in json.dumps(resource)


def test_entry_ids_are_random_and_opaque() -> None:
    """Entry ids are unrelated to any input: unique, fixed format, nothing derived."""
    ids = {new_entry_id() for _ in range(500)}
    assert len(ids) == 500
    assert all(len(entry_id) == 36 and entry_id.startswith("ent_") for entry_id in ids)


LINE = {
    "blume_patient_id": "bp-1",
    "tenant_id": "demo-hospital",
    "mrn": "MRN-1",
    "email": "jane@mail.example",
    "locale": "fr-CA",
    "email_notifications": True,
    "status": "active",
    "consent": ["withhold_external_links"],
}


def test_import_parses_exactly_the_account_fields() -> None:
    """A well-formed line becomes an account record with its consent directives."""
    [record] = parse_accounts(json.dumps(LINE))
    assert record.consent == ["withhold_external_links"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({**LINE, "nickname": "J"}, "line 1: nickname"),
        ({**LINE, "consent": ["share_everything"]}, "line 1: consent.0"),
        ({**LINE, "email_notifications": "yes"}, "line 1: email_notifications"),
        ({**LINE, "locale": "en-US"}, "line 1: locale"),
        ({**LINE, "status": "deleted"}, "line 1: status"),
        ({**LINE, "email": "not-an-address"}, "line 1: email"),
    ],
    ids=["extra-field", "unknown-directive", "loose-bool", "locale", "status", "email"],
)
def test_import_refuses_bad_lines(line: dict[str, object], message: str) -> None:
    """A bad line is refused with its line number and field; nothing is imported."""
    with pytest.raises(ImportFileError, match=message):
        parse_accounts(json.dumps(line))


def test_import_refuses_duplicates_and_garbage() -> None:
    """Duplicate ids and non-JSON lines are refused."""
    with pytest.raises(ImportFileError, match="more than once"):
        parse_accounts(json.dumps(LINE) + "\n" + json.dumps(LINE))
    with pytest.raises(ImportFileError, match="line 2: not JSON"):
        parse_accounts(json.dumps(LINE) + "\n{oops")


def test_masked_email_keeps_only_a_hint() -> None:
    """Operators see the domain and first letter, not the address."""
    assert mask_email("jane.doe@mail.example") == "j***@mail.example"
