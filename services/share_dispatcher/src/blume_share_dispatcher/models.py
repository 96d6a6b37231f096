"""The dispatcher's record of each share and the state it is in."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from blume_runtime.db import timestamp_column
from sqlalchemy import Enum
from sqlmodel import Field, SQLModel


class ShareState(StrEnum):
    REJECTED = "rejected"
    ACCEPTED = "accepted"
    LINK_ISSUED = "link_issued"
    PUBLISHED = "published"
    COMPLETED = "completed"
    FAILED = "failed"
    REVOKED = "revoked"


TERMINAL = frozenset({ShareState.REJECTED, ShareState.FAILED, ShareState.REVOKED})

# Notification outcomes can overtake share.link.issued (separate consumers, retries), so
# ACCEPTED may go straight to a terminal state.
TRANSITIONS: dict[ShareState, frozenset[ShareState]] = {
    ShareState.ACCEPTED: frozenset(
        {
            ShareState.LINK_ISSUED,
            ShareState.PUBLISHED,
            ShareState.COMPLETED,
            ShareState.FAILED,
            ShareState.REVOKED,
        }
    ),
    ShareState.LINK_ISSUED: frozenset(
        {ShareState.COMPLETED, ShareState.FAILED, ShareState.REVOKED}
    ),
    ShareState.PUBLISHED: frozenset({ShareState.COMPLETED, ShareState.FAILED, ShareState.REVOKED}),
    # A completed share stays revocable: revoking is how a sent link is taken back.
    ShareState.COMPLETED: frozenset({ShareState.REVOKED}),
}


class Share(SQLModel, table=True):
    __tablename__ = "dispatcher_shares"

    share_id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(max_length=64, index=True)
    method: str = Field(max_length=32)
    # Stored as text, not a database enum: adding a state must not need a type migration.
    state: ShareState = Field(
        sa_type=Enum(
            ShareState,
            native_enum=False,
            create_constraint=False,
            length=16,
            values_callable=lambda states: [state.value for state in states],
        )
    )
    reason: str | None = Field(default=None, max_length=64)
    correlation_id: str = Field(max_length=256, index=True)
    request_source: str = Field(max_length=256)
    request_id: str = Field(max_length=256)
    expires_at: datetime | None = timestamp_column(nullable=True)
    notification_message_id: str | None = Field(default=None, max_length=256)
    created_at: datetime = timestamp_column()
    updated_at: datetime = timestamp_column()

    def can_become(self, state: ShareState) -> bool:
        return state in TRANSITIONS.get(self.state, frozenset())
