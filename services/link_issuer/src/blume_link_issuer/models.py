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
    recipient_email: str = Field(max_length=254)
    study_instance_uid: str = Field(max_length=64)
    expires_at: datetime = timestamp_column()
    created_at: datetime = timestamp_column()
    revoked_at: datetime | None = timestamp_column(nullable=True)
    revoked_reason: str | None = Field(default=None, max_length=200)
