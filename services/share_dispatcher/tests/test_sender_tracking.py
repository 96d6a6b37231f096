"""The dispatcher as the share's owner: link use counts from the gateway's events, the
sender told of rejections, failures, first access and consent revocations, and a later lock
box revoking the patient's live shares (issues 9 and 12)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blume_contracts.envelope import CloudEvent, now
from blume_contracts.events import ClientContext, ShareLinkAccessed, ShareLinkOpened
from blume_runtime.app import Runtime
from blume_runtime.db import Database
from blume_runtime.service import HandlerContext, Service
from blume_runtime.settings import Settings
from blume_share_dispatcher.models import Share, ShareState
from blume_share_dispatcher.service import build

from services.share_dispatcher.tests.test_account_projection import account_updated
from services.share_dispatcher.tests.test_dispatcher_service import (
    EXAMPLE,
    message,
    notification_failed,
    request,
)

LINK_ID = "lnk_" + "a" * 32
CLIENT = ClientContext(client_ip="203.0.113.7", user_agent="test")
POLICY_WITH_FIRST_ACCESS = """
tenants:
  demo-hospital:
    display_name: Demo Hospital
    notify_sender_on_first_access: true
"""
RECORDED = (
    "share.accepted",
    "share.rejected",
    "share.revoked",
    "share.tracking.updated",
    "share.sender.notification.requested",
)


class Recorder:
    """Records what the dispatcher publishes."""

    def __init__(self) -> None:
        self.events: list[CloudEvent[Any]] = []
        self.service = Service("recorder")
        for event_type in RECORDED:
            self.service.handles(event_type)(self.record)

    async def record(self, event: CloudEvent[Any], _ctx: HandlerContext) -> None:
        self.events.append(event)

    def of(self, event_type: str) -> list[CloudEvent[Any]]:
        return [event for event in self.events if event.type == event_type]


async def dispatch(
    db: Database, tmp_path: Path, *events: dict[str, Any], policy: str | None = None
) -> Recorder:
    recorder = Recorder()
    policy_file = None
    if policy is not None:
        policy_file = tmp_path / "tenants.yaml"
        policy_file.write_text(policy)
    settings = Settings(state_dir=tmp_path, tenant_policy_file=policy_file)
    runtime = Runtime(settings, [build(settings), recorder.service], db)
    await runtime.start()
    try:
        for event in events:
            await runtime.publish(message(event))
            await runtime.wait_until_idle()
    finally:
        await runtime.stop()
    return recorder


def from_gateway(event_type: str, data: Any, event_id: str, at: datetime) -> dict[str, Any]:
    event = CloudEvent[Any](
        id=event_id,
        source="/blume-share/access_gateway",
        type=event_type,
        time=at,
        tenantid="demo-hospital",
        correlationid=EXAMPLE["correlationid"],
        data=data,
    )
    return json.loads(event.model_dump_json())


def opened(share_id: str, event_id: str, at: datetime) -> dict[str, Any]:
    data = ShareLinkOpened(share_id=share_id, link_id=LINK_ID, client=CLIENT)
    return from_gateway("share.link.opened", data, event_id, at)


def accessed(share_id: str, event_id: str, at: datetime, use: int = 1) -> dict[str, Any]:
    data = ShareLinkAccessed(
        share_id=share_id, link_id=LINK_ID, auth_method="none", use_number=use, client=CLIENT
    )
    return from_gateway("share.link.accessed", data, event_id, at)


async def accepted_share(
    db: Database, tmp_path: Path, event_id: str = EXAMPLE["id"], **changes: Any
) -> str:
    first = await dispatch(db, tmp_path, request(**changes) | {"id": event_id})
    share_id: str = first.of("share.accepted")[0].data.share_id
    return share_id


async def stored(db: Database, share_id: str) -> Share:
    async with db.transaction() as session:
        share = await session.get(Share, share_id)
    assert share is not None
    return share


T1 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
T2 = datetime(2026, 12, 7, 9, 5, tzinfo=UTC)
T3 = datetime(2026, 12, 7, 9, 6, tzinfo=UTC)


async def test_opens_and_grants_are_counted_once_each(sqlite_db: Database, tmp_path: Path) -> None:
    """Two opens and a grant from the gateway become the share's counts and times; a
    redelivered open (same id) is not counted again; each change is announced."""
    share_id = await accepted_share(sqlite_db, tmp_path)
    recorder = await dispatch(
        sqlite_db,
        tmp_path,
        opened(share_id, "open-1", T1),
        opened(share_id, "open-1", T1),
        opened(share_id, "open-2", T2),
        accessed(share_id, "grant-1", T3),
    )
    share = await stored(sqlite_db, share_id)
    assert (share.opened_count, share.accessed_count) == (2, 1)
    assert (share.first_opened_at, share.last_opened_at, share.last_accessed_at) == (T1, T2, T3)
    updates = recorder.of("share.tracking.updated")
    assert [(u.data.opened_count, u.data.accessed_count) for u in updates] == [
        (1, 0),
        (2, 0),
        (2, 1),
    ]
    assert {u.correlationid for u in updates} == {EXAMPLE["correlationid"]}
    # By default (policy off) the sender is not emailed about access.
    assert recorder.of("share.sender.notification.requested") == []


async def test_first_access_tells_the_sender_once_when_the_policy_asks(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """With notify_sender_on_first_access, the first grant (not the second) asks the
    notifier to tell the sender, with the recipient's masked address and nothing of the
    patient or study."""
    policy = POLICY_WITH_FIRST_ACCESS
    first = await dispatch(sqlite_db, tmp_path, request(), policy=policy)
    share_id = first.of("share.accepted")[0].data.share_id
    recorder = await dispatch(
        sqlite_db,
        tmp_path,
        accessed(share_id, "grant-1", T1),
        accessed(share_id, "grant-2", T2, use=2),
        policy=policy,
    )
    [notice] = recorder.of("share.sender.notification.requested")
    assert notice.data.occasion == "first_access"
    assert notice.data.sender_email == EXAMPLE["data"]["sender"]["email"]
    assert notice.data.recipient_hint == "b***@clinic.example"
    text = notice.model_dump_json()
    patient = EXAMPLE["data"]["study"]["patient"]
    for phi in (patient["mrn"], patient["name"], EXAMPLE["data"]["study"]["study_instance_uid"]):
        assert phi not in text


async def test_a_rejection_and_a_failure_tell_the_sender_with_the_reason(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """A rejected request (in the request's locale) and a failed share each ask for one
    sender email carrying the reason code."""
    too_long = request(expires_in_hours=10_000, locale="fr-CA") | {"id": "too-long-1"}
    rejected = await dispatch(sqlite_db, tmp_path, too_long)
    [notice] = rejected.of("share.sender.notification.requested")
    assert (notice.data.occasion, notice.data.reason) == ("rejected", "expiry_exceeds_policy")
    assert notice.data.locale == "fr-CA"

    share_id = await accepted_share(sqlite_db, tmp_path)
    failed = await dispatch(sqlite_db, tmp_path, notification_failed(share_id))
    [notice] = failed.of("share.sender.notification.requested")
    assert (notice.data.occasion, notice.data.reason) == ("failed", "smtp_rejected")


async def test_a_request_with_a_bad_sender_address_is_rejected_without_an_email(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """No usable sender address: the rejection is answered and stored, no email is asked."""
    sender = {**EXAMPLE["data"]["sender"], "email": "not an address"}
    recorder = await dispatch(sqlite_db, tmp_path, request(sender=sender))
    [rejected] = recorder.of("share.rejected")
    assert rejected.data.reason == "invalid_sender"
    assert recorder.of("share.sender.notification.requested") == []
    share = await stored(sqlite_db, rejected.data.share_id)
    assert share.sender_email is None


async def test_a_later_lock_box_revokes_the_patients_live_link_shares(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """withhold_external_links set after a link was sent revokes that share: share.revoked
    names the directive, the share is revoked, the sender is told; a repeat does nothing."""
    share_id = await accepted_share(sqlite_db, tmp_path)
    other_patient = await accepted_share(
        sqlite_db,
        tmp_path,
        "other-patient-1",
        study={**EXAMPLE["data"]["study"], "patient": {"mrn": "MRN-0002", "name": "ROE^RICHARD"}},
    )
    lock_box = account_updated("acc-1", lock_box=True, at=now())
    recorder = await dispatch(sqlite_db, tmp_path, lock_box)
    [revoked] = recorder.of("share.revoked")
    assert revoked.data.share_id == share_id
    assert revoked.data.reason == "consent_directive: withhold_external_links"
    assert revoked.correlationid == EXAMPLE["correlationid"]
    [notice] = recorder.of("share.sender.notification.requested")
    assert (notice.data.occasion, notice.data.reason) == ("revoked", "consent_directive")
    assert (await stored(sqlite_db, share_id)).state is ShareState.REVOKED
    assert (await stored(sqlite_db, other_patient)).state is ShareState.ACCEPTED
    again = account_updated("acc-2", lock_box=True, at=now())
    assert (await dispatch(sqlite_db, tmp_path, again)).of("share.revoked") == []
