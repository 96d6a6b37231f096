"""The link store: one row per minted link. The token itself is never stored, only its hash."""

from __future__ import annotations

from datetime import datetime

from blume_runtime.db import timestamp_column
from sqlmodel import Field, SQLModel


class SecureLink(SQLModel, table=True):
    __tablename__ = "link_issuer_links"

    link_id: str = Field(primary_key=True, max_length=36)
    share_id: str = Field(unique=True, max_length=36)
    tenant_id: str = Field(max_length=64, index=True)
    token_hash: str = Field(unique=True, max_length=64)
    """SHA-256 (hex) of the token; the token has 256 bits of entropy, so no salt is needed."""
    correlation_id: str = Field(max_length=256)
    traceparent: str | None = Field(default=None, max_length=55)
    """The share's trace context when the link was minted: the gateway's events join it."""
    recipient_email: str = Field(max_length=254)
    recipient_name: str = Field(max_length=200)
    sender_name: str = Field(max_length=200)
    sender_email: str = Field(max_length=254)
    organisation: str = Field(max_length=200)
    locale: str = Field(max_length=8)
    study_instance_uid: str = Field(max_length=64)
    recipient_auth: str = Field(max_length=16)
    """The tenant's policy when the share was accepted; a later policy change does not
    loosen links already sent."""
    max_uses: int | None = None
    expires_at: datetime = timestamp_column()
    created_at: datetime = timestamp_column()
    revoked_at: datetime | None = timestamp_column(nullable=True)
    revoked_reason: str | None = Field(default=None, max_length=200)
