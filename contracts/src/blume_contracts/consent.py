"""Whether a study may go into a patient's portal record or out to an external recipient.

Pure functions over what ``patient.account.updated`` says of an account, written once:
blume_publisher decides at publish time against the account it owns, the dispatcher rejects
early against its own projection of the same event.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from blume_contracts.events import WithholdReason


class AccountFacts(Protocol):
    """The fields of an account the consent rules read (any store's row has them)."""

    @property
    def mrn(self) -> str: ...

    @property
    def active(self) -> bool: ...

    @property
    def withhold_portal(self) -> bool: ...

    @property
    def withhold_external_links(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Withhold:
    reason: WithholdReason
    message: str


def portal_verdict(account: AccountFacts | None, study_mrn: str) -> Withhold | None:
    """None if the study may be published into this account's record; why not otherwise."""
    if account is None or not account.active:
        return Withhold("patient_not_enrolled", "no active Blume account for this patient")
    if account.mrn != study_mrn:
        # Never publish a study into another person's record.
        return Withhold("patient_mismatch", "the study's patient is not the account holder")
    if account.withhold_portal:
        return Withhold("consent_directive", "the patient's consent directives withhold the portal")
    return None


def external_links_withheld(accounts: Iterable[AccountFacts]) -> bool:
    """True if the patient has locked their studies away from external recipients."""
    return any(account.withhold_external_links for account in accounts)
