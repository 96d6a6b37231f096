"""The gateway's own tables: its projections of other services' events, sign-in code
challenges and the uses of each link.

The gateway reads no other service's table. What it needs of links (link_issuer's),
revocations (share_dispatcher's), patient accounts and record entries (blume_publisher's)
arrives as events (``blume_access_gateway.projections``) into the ``*_projected`` tables.
"""

from __future__ import annotations

from datetime import date, datetime

from blume_runtime.db import timestamp_column
from sqlalchemy import JSON
from sqlmodel import Field, SQLModel


class OtpChallenge(SQLModel, table=True):
    """One emailed sign-in code. Only its keyed hash is kept; only the newest one counts."""

    __tablename__ = "access_gateway_otp_challenges"

    challenge_id: str = Field(primary_key=True, max_length=36)
    link_id: str = Field(max_length=36, index=True)
    code_hash: str = Field(max_length=64)
    """HMAC-SHA256 (hex) of challenge id and code, keyed with a key derived from the gateway
    secret: a six-digit code has too little entropy for a plain hash."""
    created_at: datetime = timestamp_column()
    expires_at: datetime = timestamp_column()
    attempts: int = 0
    """Wrong codes entered so far."""
    locked_at: datetime | None = timestamp_column(nullable=True)
    superseded_at: datetime | None = timestamp_column(nullable=True)
    """Set when a newer code was asked for."""
    consumed_at: datetime | None = timestamp_column(nullable=True)


class LinkGrant(SQLModel, table=True):
    """One granted use of a link: what the policy's maximum number of uses counts."""

    __tablename__ = "access_gateway_link_grants"

    link_id: str = Field(primary_key=True, max_length=36)
    use_number: int = Field(primary_key=True)
    auth_method: str = Field(max_length=16)
    granted_at: datetime = timestamp_column()


class ProjectedLink(SQLModel, table=True):
    """A link as ``share.link.issued`` described it: the page's content and the policy frozen
    at issue time. Its revocation is a ``ProjectedRevocation`` of its share."""

    __tablename__ = "access_gateway_links"

    link_id: str = Field(primary_key=True, max_length=36)
    share_id: str = Field(max_length=36, index=True)
    tenant_id: str = Field(max_length=64)
    token_hash: str = Field(unique=True, max_length=64)
    correlation_id: str = Field(max_length=256)
    recipient_email: str = Field(max_length=254)
    recipient_name: str = Field(max_length=200)
    sender_name: str = Field(max_length=200)
    sender_email: str | None = Field(default=None, max_length=254)
    """Whom ``share.link.locked`` tells; None on links projected before migration 0010."""
    organisation: str = Field(max_length=200)
    locale: str = Field(max_length=8)
    recipient_auth: str = Field(max_length=16)
    max_uses: int | None = None
    expires_at: datetime = timestamp_column()
    traceparent: str | None = Field(default=None, max_length=55)
    """The share's trace (``share.link.issued``'s), which the gateway's events join."""
    study_instance_uid: str | None = Field(default=None, max_length=64)
    """The one study the image proxy lets this link reach; None on links projected before
    migration 0013 (their viewer says the study is not available)."""


class ProjectedRevocation(SQLModel, table=True):
    """A revoked share (``share.revoked``): its link and its record entries stop working."""

    __tablename__ = "access_gateway_revocations"

    share_id: str = Field(primary_key=True, max_length=36)
    revoked_at: datetime = timestamp_column()


class ProjectedAccount(SQLModel, table=True):
    """A patient account as its newest ``patient.account.updated`` said."""

    __tablename__ = "access_gateway_accounts"

    blume_patient_id: str = Field(primary_key=True, max_length=64)
    tenant_id: str = Field(max_length=64)
    locale: str = Field(max_length=8)
    active: bool
    withhold_portal: bool
    updated_at: datetime = timestamp_column()


class ProjectedEntry(SQLModel, table=True):
    """A record entry as ``share.blume.published`` announced it; ``share_id`` is the share
    that first published it (whose revocation hides it, as in the record store)."""

    __tablename__ = "access_gateway_entries"

    entry_id: str = Field(primary_key=True, max_length=36)
    blume_patient_id: str = Field(max_length=64, index=True)
    tenant_id: str = Field(max_length=64)
    share_id: str = Field(max_length=36)
    correlation_id: str = Field(max_length=256)
    study_date: date | None = None
    modalities: list[str] = Field(default_factory=list, sa_type=JSON)
    description: str | None = Field(default=None, max_length=256)
    traceparent: str | None = Field(default=None, max_length=55)
    study_instance_uid: str | None = Field(default=None, max_length=64)
    """The one study the image proxy lets this entry reach (None before migration 0013)."""
