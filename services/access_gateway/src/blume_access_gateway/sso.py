"""A tenant's SSO policy applied: the provider to send recipients to, and whose identity counts."""

from __future__ import annotations

from blume_runtime.tenants import SsoPolicy

from blume_access_gateway.models import ProjectedLink
from blume_access_gateway.oidc import Identity, Provider


def sso_provider(policy: SsoPolicy) -> Provider:
    return Provider(
        issuer=str(policy.issuer),
        client_id=policy.client_id,
        client_secret=policy.client_secret(),
    )


def identity_matches(identity: Identity, link: ProjectedLink, policy: SsoPolicy) -> bool:
    """The invited address itself, or an address in a domain the policy allows."""
    verified = identity.email_verified is True or (
        identity.email_verified is None and policy.trust_unverified_email
    )
    if identity.email is None or not verified:
        return False
    invited = link.recipient_email.strip().lower()
    if identity.email == invited:
        return True
    domain = identity.email.rpartition("@")[2]
    return domain in {allowed.strip().lower() for allowed in policy.allowed_domains}
