"""A tenant's SSO policy applied: the provider to send recipients to, and whose identity counts."""

from __future__ import annotations

from typing import Final

from blume_contracts.events import EmailAddress
from blume_runtime.tenants import SsoPolicy
from pydantic import TypeAdapter, ValidationError

from blume_access_gateway.models import ProjectedLink
from blume_access_gateway.oidc import Identity, Provider

_ADDRESS: Final = TypeAdapter(EmailAddress)


def _parses(address: str) -> bool:
    """Whether the contracts' address type (RFC 5322 addr-spec, no quoting) takes it as is."""
    try:
        return _ADDRESS.validate_python(address) == address
    except ValidationError:
        return False


def sso_provider(policy: SsoPolicy) -> Provider:
    return Provider(
        issuer=str(policy.issuer),
        client_id=policy.client_id,
        client_secret=policy.client_secret(),
    )


def identity_matches(identity: Identity, link: ProjectedLink, policy: SsoPolicy) -> bool:
    """The invited address itself, or an address in a domain the policy allows; never an
    address our own parser refuses (``"x@evil"@partner.example`` ends in an allowed domain,
    but no event could carry it as the signed-in address)."""
    verified = identity.email_verified is True or (
        identity.email_verified is None and policy.trust_unverified_email
    )
    if identity.email is None or not verified or not _parses(identity.email):
        return False
    invited = link.recipient_email.strip().lower()
    if identity.email == invited:
        return True
    domain = identity.email.rpartition("@")[2]
    return domain in {allowed.strip().lower() for allowed in policy.allowed_domains}
