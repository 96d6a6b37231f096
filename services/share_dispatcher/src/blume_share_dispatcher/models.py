"""The dispatcher's record of each share and the state it is in."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from blume_contracts.envelope import RawEvent
from blume_contracts.ids import share_id_for
from blume_runtime.db import timestamp_column
from sqlalchemy import Enum, Index
from sqlmodel import Field, SQLModel


class ShareState(StrEnum):
    REJECTED = "rejected"
    ACCEPTED = "accepted"
    WAITING = "waiting"
    """The notification waits on an outage (``reason`` names the error class); not failed."""
    LINK_ISSUED = "link_issued"
    """Not entered any more (the dispatcher no longer consumes ``share.link.issued``); kept so
    that a share left in it by an earlier version still reads and moves on."""
    PUBLISHED = "published"
    COMPLETED = "completed"
    FAILED = "failed"
    REVOKED = "revoked"


TERMINAL = frozenset({ShareState.REJECTED, ShareState.FAILED, ShareState.REVOKED})

_ONWARD = frozenset(
    {ShareState.WAITING, ShareState.COMPLETED, ShareState.FAILED, ShareState.REVOKED}
)
# Notification outcomes can overtake share.blume.published (separate consumers, retries), so
# ACCEPTED may go straight to a terminal state, and a waiting share does not go back to
# published when it arrives late. A link share goes from ACCEPTED to its email's outcome.
TRANSITIONS: dict[ShareState, frozenset[ShareState]] = {
    ShareState.ACCEPTED: _ONWARD | {ShareState.LINK_ISSUED, ShareState.PUBLISHED},
    ShareState.LINK_ISSUED: _ONWARD,
    ShareState.PUBLISHED: _ONWARD,
    # Waiting on another error class is still waiting (the reason changes).
    ShareState.WAITING: _ONWARD,
    # A completed share stays revocable: revoking is how a sent link is taken back.
    ShareState.COMPLETED: frozenset({ShareState.REVOKED}),
}


class Share(SQLModel, table=True):
    __tablename__ = "dispatcher_shares"
    # A consent directive looks up the patient's shares by tenant and MRN.
    __table_args__ = (Index("ix_dispatcher_shares_tenant_mrn", "tenant_id", "patient_mrn"),)

    share_id: str = Field(primary_key=True, max_length=36)
    # As long as the envelope's tenantid may be (256): a rejection keeps the request's own.
    tenant_id: str = Field(max_length=256, index=True)
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
    waiting_since: datetime | None = timestamp_column(nullable=True)
    """When the notification first failed, while the share waits on an outage."""
    # Whom to tell what became of the share (the sender emails), from the request.
    sender_name: str | None = Field(default=None, max_length=200)
    sender_email: str | None = Field(default=None, max_length=254)
    locale: str | None = Field(default=None, max_length=16)
    recipient_hint: str | None = Field(default=None, max_length=254)
    """The recipient's masked address (``b***@clinic.example``), the most a sender email says."""
    patient_mrn: str | None = Field(default=None, max_length=64)
    """Whose study it is, so a later consent directive finds the patient's live shares."""
    # The recipient's use of the link, from the gateway's share.link.opened / accessed.
    opened_count: int = Field(default=0)
    first_opened_at: datetime | None = timestamp_column(nullable=True)
    last_opened_at: datetime | None = timestamp_column(nullable=True)
    accessed_count: int = Field(default=0)
    last_accessed_at: datetime | None = timestamp_column(nullable=True)
    created_at: datetime = timestamp_column()
    updated_at: datetime = timestamp_column()

    @property
    def live(self) -> bool:
        """Not ended: its link may still open, its Blume entry still show."""
        return self.state not in TERMINAL

    @classmethod
    def answering(cls, request: RawEvent, **columns: Any) -> Share:
        """The share a ``study.send.requested`` makes, keyed and correlated by its envelope;
        ``columns`` are the rest (``tenant_id``, ``method`` and ``state`` at least)."""
        return cls(
            share_id=share_id_for(request),
            correlation_id=request.correlationid,
            request_source=request.source,
            request_id=request.id,
            **columns,
        )

    def can_become(self, state: ShareState) -> bool:
        return state in TRANSITIONS.get(self.state, frozenset())
