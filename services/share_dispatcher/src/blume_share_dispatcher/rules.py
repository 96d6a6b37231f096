"""Request rules: contract violations mapped to reason codes, and the tenant's policy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from blume_contracts.consent import external_links_withheld, portal_verdict
from blume_contracts.events import RejectionReason, ShareRejected, StudySendRequested
from blume_runtime.tenants import TenantPolicy
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from blume_share_dispatcher.accounts import PatientDirectory

R = RejectionReason
MAX_FIELD_LENGTH = 200
_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")

# Most specific first: the first rule matching any error's location names the reason.
_FIELD_REASONS: tuple[tuple[tuple[str, ...], RejectionReason], ...] = (
    (("method",), R.UNKNOWN_METHOD),
    (("tenant_id",), R.UNKNOWN_TENANT),
    (("recipient", "email"), R.INVALID_RECIPIENT_EMAIL),
    (("recipient", "name"), R.INVALID_RECIPIENT_NAME),
    (("recipient",), R.MISSING_RECIPIENT),
    (("patient_account",), R.MISSING_PATIENT_ACCOUNT),
    (("study", "study_instance_uid"), R.INVALID_STUDY_UID),
    (("study", "patient"), R.INVALID_PATIENT),
    (("study",), R.INVALID_STUDY),
    (("sender",), R.INVALID_SENDER),
    (("locale",), R.UNSUPPORTED_LOCALE),
    (("expires_in_hours",), R.INVALID_EXPIRY),
    (("message",), R.MESSAGE_TOO_LONG),
)
_AUDIENCE_ERRORS = {
    "an external_link share needs a recipient": (R.MISSING_RECIPIENT, "recipient"),
    "a blume share needs a patient_account": (R.MISSING_PATIENT_ACCOUNT, "patient_account"),
}


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectionReason
    message: str
    field: str | None = None

    def answer(self, share_id: str) -> ShareRejected:
        """The ``share.rejected`` that tells the requester why."""
        return ShareRejected(
            share_id=share_id, reason=self.reason, message=self.message, field=self.field
        )


def field_path(loc: tuple[int | str, ...]) -> str:
    """A dotted path to show: attacker-chosen key names (an unknown field's) are replaced by
    ``?`` unless they look like identifiers, and the whole is bounded."""
    parts = [part if _NAME.match(str(part)) else "?" for part in map(str, loc)]
    return ".".join(parts)[:MAX_FIELD_LENGTH]


def rejection_for(error: ValidationError) -> Rejection:
    """The reason code for a request that breaks the contract; never echoes the bad value."""
    errors = error.errors(include_input=False, include_url=False)
    for error_detail in errors:
        if error_detail["loc"] == () and (audience := _audience_error(error_detail)):
            reason, field = audience
            return Rejection(reason, f"{field} is required for this method", field)
    for prefix, reason in _FIELD_REASONS:
        for error_detail in errors:
            loc = tuple(str(part) for part in error_detail["loc"])
            if loc[: len(prefix)] == prefix and error_detail["type"] != "extra_forbidden":
                field = field_path(error_detail["loc"])
                return Rejection(reason, f"{field}: {error_detail['msg']}"[:500], field)
    first = errors[0]
    location = field_path(first["loc"])
    return Rejection(
        R.MALFORMED_REQUEST, f"{location or 'data'}: {first['msg']}"[:500], location or None
    )


def envelope_rejection(error: ValidationError) -> Rejection:
    """The answer to a request whose CloudEvent envelope is broken (``invalid_envelope``)."""
    names = [
        field_path(detail["loc"][:1])
        for detail in error.errors(include_input=False, include_url=False)
        if detail["loc"]
    ]
    attribute = names[0] if names else None
    if attribute is None:
        return Rejection(R.INVALID_ENVELOPE, "the CloudEvent envelope is not valid")
    return Rejection(
        R.INVALID_ENVELOPE,
        f"the CloudEvent attribute {attribute} is missing, not allowed or not valid",
        attribute,
    )


def _audience_error(detail: ErrorDetails) -> tuple[RejectionReason, str] | None:
    message = detail["msg"].removeprefix("Value error, ")
    return _AUDIENCE_ERRORS.get(message)


def check_policy(
    request: StudySendRequested,
    event_tenant: str,
    policies: dict[str, TenantPolicy],
) -> Rejection | TenantPolicy:
    """Tenant and policy rules a well-formed request must also pass."""
    if request.tenant_id != event_tenant:
        return Rejection(
            R.TENANT_MISMATCH, "data.tenant_id differs from the event's tenantid", "tenant_id"
        )
    policy = policies.get(request.tenant_id)
    if policy is None:
        return Rejection(R.UNKNOWN_TENANT, "the tenant has no sharing policy", "tenant_id")
    if request.method == "blume":
        return policy  # a record entry does not expire: the link-expiry rules do not apply
    hours = request.link_hours(policy.link_expiry_default_hours)
    if hours > policy.link_expiry_max_hours:
        return Rejection(
            R.EXPIRY_EXCEEDS_POLICY,
            f"expires_in_hours exceeds the tenant's maximum of {policy.link_expiry_max_hours}",
            "expires_in_hours",
        )
    return policy


async def consent_rejection(
    request: StudySendRequested, directory: PatientDirectory
) -> Rejection | None:
    """The patient's account and consent directives, as far as the dispatcher decides them.

    A blume share needs an active account whose MRN is the study's; the portal's own consent
    directive is left to the publisher, which checks it against the account at publish time.
    An external link is refused when the patient has locked their studies away (lock box).
    """
    mrn = request.study.patient.mrn
    if request.patient_account is not None:
        account = await directory.account(
            request.tenant_id, request.patient_account.blume_patient_id
        )
        withhold = portal_verdict(account, mrn)
        if withhold is not None and withhold.reason != "consent_directive":
            return Rejection(R(withhold.reason), withhold.message, "patient_account")
        return None
    if external_links_withheld(await directory.accounts_for_mrn(request.tenant_id, mrn)):
        return Rejection(
            R.CONSENT_DIRECTIVE,
            "the patient's consent directives withhold their studies from external recipients",
            "study.patient",
        )
    return None


def expiry(
    request: StudySendRequested, policy: TenantPolicy, accepted_at: datetime
) -> datetime | None:
    """When an external link stops working; a Blume record entry does not expire."""
    if request.method == "blume":
        return None
    hours = request.link_hours(policy.link_expiry_default_hours)
    return accepted_at + timedelta(hours=hours)
