"""The dispatcher's own projection of patient accounts, fed by ``patient.account.updated``,
is what its consent rules read (it imports nothing of blume_publisher)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from blume_contracts.envelope import CloudEvent
from blume_contracts.events import PatientAccountUpdated
from blume_runtime.db import Database
from blume_share_dispatcher.accounts import ProjectedAccount

from services.share_dispatcher.tests.test_dispatcher_service import EXAMPLE, dispatch, request

MRN = EXAMPLE["data"]["study"]["patient"]["mrn"]
TENANT = EXAMPLE["data"]["tenant_id"]
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def account_updated(event_id: str, *, lock_box: bool, at: datetime) -> dict[str, Any]:
    """blume_publisher's announcement of the example patient's account."""
    event = CloudEvent[Any](
        id=event_id,
        source="/blume-share/blume_publisher",
        type="patient.account.updated",
        time=at,
        tenantid=TENANT,
        correlationid=f"patients-import-{event_id}",
        data=PatientAccountUpdated(
            blume_patient_id="bp-0001",
            tenant_id=TENANT,
            mrn=MRN,
            email="jane@mail.example",
            locale="en-CA",
            email_notifications=True,
            status="active",
            withhold_portal=False,
            withhold_external_links=lock_box,
            updated_at=at,
        ),
    )
    return json.loads(event.model_dump_json())


async def test_a_lock_box_announced_by_event_rejects_an_external_share(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """After ``patient.account.updated`` with withhold_external_links, an external share of
    that patient's study is rejected with consent_directive."""
    upstream = await dispatch(
        sqlite_db, tmp_path, account_updated("acc-1", lock_box=True, at=START), request()
    )
    [rejected] = upstream.of("share.rejected")
    assert rejected.data.reason == "consent_directive"


async def test_a_late_older_update_does_not_undo_a_newer_one(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """The newest account state wins: the lock box lifted later stays lifted when the older
    copy (lock box on) arrives after it, and the share is accepted."""
    newer = account_updated("acc-2", lock_box=False, at=START + timedelta(minutes=5))
    older = account_updated("acc-1", lock_box=True, at=START)
    upstream = await dispatch(sqlite_db, tmp_path, newer, older, request())
    assert upstream.of("share.rejected") == []
    assert len(upstream.of("share.accepted")) == 1
    async with sqlite_db.transaction() as session:
        account = await session.get(ProjectedAccount, "bp-0001")
    assert account is not None
    assert account.withhold_external_links is False
    assert account.updated_at == START + timedelta(minutes=5)
