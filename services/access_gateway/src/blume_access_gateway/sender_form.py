"""Checking the sharing page's form with the dispatcher's own rules.

The body is validated by ``StudySendRequested``, the contract the dispatcher validates
with, so the page refuses exactly what the dispatcher would; the tenant's expiry cap and the
patient's Blume readiness are the policy and consent facts the page can see. Each error is
a message key for the form field it belongs to (shown inline, in plain words).
"""

from __future__ import annotations

from typing import Final

from blume_contracts.events import StudySendRequested
from blume_contracts.launches import LaunchRequest
from blume_runtime.tenants import TenantPolicy
from pydantic import ValidationError

from blume_access_gateway.launches import BlumeReadiness, SenderLaunches, SendForm

METHODS: Final = ("external_link", "blume")
_FIELD_OF_LOCATION: Final = (
    (("recipient", "email"), "recipient_email"),
    (("recipient", "name"), "recipient_name"),
    (("recipient",), "recipient_name"),
    (("message",), "message"),
    (("expires_in_hours",), "expires_in_hours"),
    (("method",), "method"),
)


def _field_for(location: tuple[str, ...], method: str) -> str:
    for prefix, field in _FIELD_OF_LOCATION:
        if location[: len(prefix)] == prefix:
            return field
    if location == ():  # the contract's audience rule: a recipient, or a patient account
        return "recipient_name" if method == "external_link" else "method"
    return "form"


def contract_errors(error: ValidationError, method: str) -> dict[str, str]:
    """``field -> message key`` for what the contract refused (first error per field)."""
    errors: dict[str, str] = {}
    for detail in error.errors(include_input=False, include_url=False):
        field = _field_for(tuple(str(part) for part in detail["loc"]), method)
        errors.setdefault(field, f"send.error.{field}")
    return errors


def form_errors(
    launches: SenderLaunches,
    request: LaunchRequest,
    form: SendForm,
    policy: TenantPolicy,
    readiness: BlumeReadiness,
) -> tuple[dict[str, str], StudySendRequested | None]:
    """The form's errors, or none and the event to send."""
    if form.method not in METHODS:
        return {"method": "send.error.method"}, None
    errors: dict[str, str] = {}
    if form.method == "external_link":
        try:
            hours = form.hours
        except ValueError:
            return {"expires_in_hours": "send.error.expires_in_hours"}, None
        if hours is not None and hours > policy.link_expiry_max_hours:
            errors["expires_in_hours"] = "send.error.expiry_over_cap"
    elif readiness is not BlumeReadiness.ENROLLED:
        errors["method"] = f"send.error.blume_{readiness.value}"
    try:
        send = launches.send_request(request, form)
    except ValidationError as error:
        return {**contract_errors(error, form.method), **errors}, None
    return errors, (send if not errors else None)
