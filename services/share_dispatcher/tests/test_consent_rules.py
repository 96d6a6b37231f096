"""The dispatcher's consent rules against a fake directory of its projected accounts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from blume_contracts.artefacts import EXAMPLES_DIR
from blume_contracts.events import RejectionReason, StudySendRequested
from blume_share_dispatcher.accounts import ProjectedAccount
from blume_share_dispatcher.rules import consent_rejection

EXAMPLE = json.loads((EXAMPLES_DIR / "study.send.requested.json").read_text())["data"]


class FakeDirectory:
    """The PatientDirectory port, over a list of accounts."""

    def __init__(self, *accounts: ProjectedAccount) -> None:
        self.accounts = list(accounts)

    async def account(self, tenant_id: str, blume_patient_id: str) -> ProjectedAccount | None:
        return next(
            (
                a
                for a in self.accounts
                if a.tenant_id == tenant_id and a.blume_patient_id == blume_patient_id
            ),
            None,
        )

    async def accounts_for_mrn(self, tenant_id: str, mrn: str) -> list[ProjectedAccount]:
        return [a for a in self.accounts if a.tenant_id == tenant_id and a.mrn == mrn]


def patient(**changes: Any) -> ProjectedAccount:
    values: dict[str, Any] = {
        "blume_patient_id": "bp-0001",
        "tenant_id": "demo-hospital",
        "mrn": "MRN-0001",
        "active": True,
        "withhold_portal": False,
        "withhold_external_links": False,
        **changes,
    }
    return ProjectedAccount.model_validate(values)


def blume_request() -> StudySendRequested:
    data = {k: v for k, v in EXAMPLE.items() if k != "recipient"}
    data.update(method="blume", patient_account={"blume_patient_id": "bp-0001"})
    return StudySendRequested.model_validate(data)


EXTERNAL = StudySendRequested.model_validate(EXAMPLE)


@pytest.mark.parametrize(
    ("directory", "reason"),
    [
        (FakeDirectory(), RejectionReason.PATIENT_NOT_ENROLLED),
        (
            FakeDirectory(patient(active=False)),
            RejectionReason.PATIENT_NOT_ENROLLED,
        ),
        (FakeDirectory(patient(tenant_id="elsewhere")), RejectionReason.PATIENT_NOT_ENROLLED),
        (FakeDirectory(patient(mrn="MRN-0002")), RejectionReason.PATIENT_MISMATCH),
    ],
    ids=["no-account", "inactive", "other-tenant", "other-patient"],
)
async def test_blume_share_rejections(directory: FakeDirectory, reason: RejectionReason) -> None:
    """A blume share needs an active account of this tenant for the study's patient."""
    rejection = await consent_rejection(blume_request(), directory)
    assert rejection is not None
    assert rejection.reason is reason


async def test_blume_share_leaves_the_portal_directive_to_the_publisher() -> None:
    """withhold_portal is decided at publish time, so the dispatcher accepts here."""
    directory = FakeDirectory(patient(withhold_portal=True))
    assert await consent_rejection(blume_request(), directory) is None


async def test_lock_box_rejects_external_links() -> None:
    """withhold_external_links refuses an external share with consent_directive."""
    directory = FakeDirectory(patient(withhold_external_links=True))
    rejection = await consent_rejection(EXTERNAL, directory)
    assert rejection is not None
    assert rejection.reason is RejectionReason.CONSENT_DIRECTIVE


async def test_external_link_without_lock_box_passes() -> None:
    """Patients without a lock box, or without any account, can be shared externally."""
    assert await consent_rejection(EXTERNAL, FakeDirectory()) is None
    assert await consent_rejection(EXTERNAL, FakeDirectory(patient(withhold_portal=True))) is None
