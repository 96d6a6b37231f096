"""Telling the sender what became of a share: who the sender is, and the request to email.

The dispatcher owns the share, so it decides when the sender is told (a rejection, a
failure, a revocation, and, by the tenant's policy, the recipient's first access); the
notifier sends the email from ``share.sender.notification.requested`` alone. Nothing of the
patient or the study goes into that event: the share id, the occasion, a reason code and
the recipient's masked address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from blume_contracts.events import (
    EmailAddress,
    PersonName,
    SenderNotificationRequested,
    SenderOccasion,
)
from blume_contracts.locales import Locale, narrow_locale
from blume_runtime.service import HandlerContext
from pydantic import BaseModel, TypeAdapter, ValidationError

from blume_share_dispatcher.models import Share

_EMAIL: Final = TypeAdapter(EmailAddress)
_NAME: Final = TypeAdapter(PersonName)


@dataclass(frozen=True, slots=True)
class SenderContact:
    """Whom to tell, as far as the request says it validly (either part may be missing)."""

    name: str | None
    email: str | None
    locale: Locale


def _valid(adapter: TypeAdapter[str], value: Any) -> str | None:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def sender_contact(data: Any) -> SenderContact:
    """The sender of request data that may have broken its contract: only what validates.

    A request rejected for a bad sender address still names a locale; one with no usable
    address is answered without an email (the rejection itself is audited).
    """
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    request = data if isinstance(data, dict) else {}
    sender = request.get("sender")
    sender = sender if isinstance(sender, dict) else {}
    locale = request.get("locale")
    return SenderContact(
        name=_valid(_NAME, sender.get("name")),
        email=_valid(_EMAIL, sender.get("email")),
        locale=narrow_locale(locale if isinstance(locale, str) else None),
    )


def mask_address(address: str) -> str:
    """``bob.jones@clinic.example`` as ``b***@clinic.example``: enough for the sender to
    recognise the recipient, too little to be an address anyone can use."""
    local, _at, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}"


def tell_sender(
    ctx: HandlerContext, share: Share, occasion: SenderOccasion, reason: str | None
) -> None:
    """Ask the notifier to email the sender; with no valid sender address, log that the
    sender was not told (the share's own outcome event is the audited record)."""
    if share.sender_email is None:
        ctx.log.warning("sender not told: the request had no valid sender address")
        return
    ctx.emit(
        "share.sender.notification.requested",
        SenderNotificationRequested(
            share_id=share.share_id,
            occasion=occasion,
            reason=reason,
            sender_name=share.sender_name,
            sender_email=share.sender_email,
            recipient_hint=share.recipient_hint,
            locale=narrow_locale(share.locale),
        ),
        tenantid=share.tenant_id,
        correlationid=share.correlation_id,
    )
