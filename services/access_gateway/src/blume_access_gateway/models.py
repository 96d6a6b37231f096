"""The gateway's own tables: sign-in code challenges and the uses of each link.

The link itself belongs to link_issuer and the share's state to share_dispatcher; the
gateway only reads those.
"""

from __future__ import annotations

from datetime import datetime

from blume_runtime.db import timestamp_column
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
