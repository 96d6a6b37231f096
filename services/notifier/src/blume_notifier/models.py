"""What the notifier remembers: one row per email the SMTP server accepted.

The row is the idempotency guard that outlives the inbox: a second ``share.link.issued`` for
the same share (a new event id, say after a producer replay) finds it and sends nothing. It is
claimed before the email is sent, so that such a second event handled at the same time waits
for the first transaction instead of sending too.
The recipient's address is not kept, only a fingerprint to match it against the audit store.
"""

from __future__ import annotations

from datetime import datetime

from blume_runtime.db import timestamp_column
from sqlmodel import Field, SQLModel


def notification_key(share_id: str, kind: str) -> str:
    """One email of each kind per share, e.g. ``shr_...:link``."""
    return f"{share_id}:{kind}"


class Notification(SQLModel, table=True):
    __tablename__ = "notifier_notifications"

    notification_key: str = Field(primary_key=True, max_length=128)
    share_id: str = Field(max_length=36, index=True)
    message_id: str = Field(max_length=255)
    """RFC 5322 Message-ID, stable per share, so the email can be traced in the relay's logs."""
    recipient_fingerprint: str = Field(max_length=64)
    """``fingerprint`` of the lowercased recipient address; never the address itself."""
    sent_at: datetime = timestamp_column()
