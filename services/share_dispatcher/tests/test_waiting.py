"""A share whose email waits on an outage is waiting, not failed, and completes afterwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from blume_contracts.envelope import now
from blume_contracts.events import (
    NotificationPurpose,
    ShareNotificationDelayed,
    ShareNotificationSent,
)
from blume_runtime.db import Database
from blume_share_dispatcher.models import Share, ShareState

from .test_dispatcher_service import dispatch, from_notifier, request

SINCE = datetime(2026, 11, 28, 14, 0, 2, tzinfo=UTC)


def delayed(
    share_id: str,
    error_class: str = "smtp_unavailable",
    purpose: NotificationPurpose = "share",
    since: datetime = SINCE,
    event_id: str = "nd-1",
) -> dict[str, Any]:
    notice = ShareNotificationDelayed(
        share_id=share_id,
        purpose=purpose,
        error_class=error_class,
        first_failed_at=since,
        next_attempt_at=since + timedelta(seconds=5),
    )
    return from_notifier("share.notification.delayed", notice, event_id)


def sent(share_id: str) -> dict[str, Any]:
    accepted = ShareNotificationSent(
        share_id=share_id,
        message_id=f"<{share_id}.link@blume-share.example>",
        recipient_email="bob.jones@clinic.example",
        accepted_at=now(),
    )
    return from_notifier("share.notification.sent", accepted, "ns-1")


async def share_of(db: Database, share_id: str) -> Share:
    async with db.transaction() as session:
        share = await session.get(Share, share_id)
    assert share is not None
    return share


async def test_a_delayed_email_puts_the_share_in_waiting_then_sent_completes_it(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """share.notification.delayed: waiting, with the error class as reason and the first
    failure as since; no share.failed. share.notification.sent later: completed."""
    first = await dispatch(sqlite_db, tmp_path, request())
    share_id = first.of("share.accepted")[0].data.share_id

    waiting = await dispatch(sqlite_db, tmp_path, delayed(share_id))
    assert waiting.events == []
    share = await share_of(sqlite_db, share_id)
    assert (share.state, share.reason, share.waiting_since) == (
        ShareState.WAITING,
        "smtp_unavailable",
        SINCE,
    )

    done = await dispatch(sqlite_db, tmp_path, sent(share_id))
    [completed] = done.of("share.completed")
    assert completed.data.share_id == share_id
    assert done.of("share.failed") == []
    share = await share_of(sqlite_db, share_id)
    assert (share.state, share.reason) == (ShareState.COMPLETED, None)


async def test_waiting_on_another_error_class_updates_the_reason_keeps_the_start(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """A second outage class while waiting changes the reason; since stays the earliest."""
    first = await dispatch(sqlite_db, tmp_path, request())
    share_id = first.of("share.accepted")[0].data.share_id
    await dispatch(sqlite_db, tmp_path, delayed(share_id))
    later = delayed(
        share_id, "database_unavailable", since=SINCE + timedelta(minutes=5), event_id="nd-2"
    )
    await dispatch(sqlite_db, tmp_path, later)
    share = await share_of(sqlite_db, share_id)
    assert (share.state, share.reason, share.waiting_since) == (
        ShareState.WAITING,
        "database_unavailable",
        SINCE,
    )


async def test_a_delayed_sign_in_code_leaves_the_share_alone(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """A sign-in code's email waiting is not the share's waiting."""
    first = await dispatch(sqlite_db, tmp_path, request())
    share_id = first.of("share.accepted")[0].data.share_id
    await dispatch(sqlite_db, tmp_path, delayed(share_id, purpose="sign_in_code"))
    share = await share_of(sqlite_db, share_id)
    assert share.state is ShareState.ACCEPTED
