"""share_dispatcher through the real pipeline (embedded broker, SQLite): state and outcomes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blume_contracts.artefacts import EXAMPLES_DIR
from blume_contracts.envelope import CloudEvent, now
from blume_contracts.events import ShareNotificationFailed, ShareRevokeRequested
from blume_contracts.ids import share_id_for
from blume_runtime.app import Runtime
from blume_runtime.db import Database
from blume_runtime.service import HandlerContext, Service
from blume_runtime.settings import Settings
from blume_runtime.transport import OutgoingMessage
from blume_share_dispatcher.models import Share, ShareState
from blume_share_dispatcher.service import build
from pydantic import BaseModel

EXAMPLE = json.loads((EXAMPLES_DIR / "study.send.requested.json").read_text())


class Upstream:
    """Stands in for OmegaAI: records every share.* outcome the dispatcher publishes."""

    def __init__(self) -> None:
        self.events: list[CloudEvent[Any]] = []
        self.service = Service("upstream")
        for event_type in (
            "share.accepted",
            "share.rejected",
            "share.link.requested",
            "share.completed",
            "share.failed",
            "share.revoked",
        ):
            self.service.handles(event_type)(self.record)

    async def record(self, event: CloudEvent[Any], _ctx: HandlerContext) -> None:
        self.events.append(event)

    def of(self, event_type: str) -> list[CloudEvent[Any]]:
        return [event for event in self.events if event.type == event_type]


def message(event: dict[str, Any]) -> OutgoingMessage:
    return OutgoingMessage(event["type"], json.dumps(event).encode(), event["id"])


async def dispatch(db: Database, tmp_path: Path, *events: dict[str, Any]) -> Upstream:
    upstream = Upstream()
    settings = Settings(state_dir=tmp_path)
    runtime = Runtime(settings, [build(settings), upstream.service], db)
    await runtime.start()
    try:
        for event in events:
            await runtime.publish(message(event))
            await runtime.wait_until_idle()
    finally:
        await runtime.stop()
    return upstream


def request(**data: Any) -> dict[str, Any]:
    return {**EXAMPLE, "data": {**EXAMPLE["data"], **data}}


def from_notifier(event_type: str, data: BaseModel, event_id: str) -> dict[str, Any]:
    """An event the notifier published about the example request's share, as JSON."""
    event = CloudEvent[Any](
        id=event_id,
        source="/blume-share/notifier",
        type=event_type,
        time=now(),
        tenantid="demo-hospital",
        correlationid=EXAMPLE["correlationid"],
        data=data,
    )
    return json.loads(event.model_dump_json())


def notification_failed(share_id: str) -> dict[str, Any]:
    failed = ShareNotificationFailed(share_id=share_id, reason="smtp_rejected", detail="550")
    return from_notifier("share.notification.failed", failed, "nf-1")


async def test_valid_request_is_accepted_and_asks_for_a_link(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """A valid request: share.accepted and share.link.requested, PHI-free link request fields."""
    upstream = await dispatch(sqlite_db, tmp_path, request())
    [accepted] = upstream.of("share.accepted")
    [link_request] = upstream.of("share.link.requested")
    assert accepted.data.share_id == link_request.data.share_id
    assert link_request.data.organisation == "Demo Hospital"
    assert "patient" not in link_request.data.model_dump()
    async with sqlite_db.transaction() as session:
        share = await session.get(Share, accepted.data.share_id)
    assert share is not None
    assert share.state is ShareState.ACCEPTED


async def test_blume_share_without_account_is_rejected(sqlite_db: Database, tmp_path: Path) -> None:
    """A blume request for a patient with no Blume account is rejected as not enrolled."""
    data = {k: v for k, v in EXAMPLE["data"].items() if k != "recipient"}
    event = {
        **EXAMPLE,
        "data": {**data, "method": "blume", "patient_account": {"blume_patient_id": "bp-0001"}},
    }
    upstream = await dispatch(sqlite_db, tmp_path, event)
    [rejected] = upstream.of("share.rejected")
    assert rejected.data.reason == "patient_not_enrolled"


async def test_rejected_share_is_recorded_with_its_reason(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """A rejection is a share in state rejected, so status can explain it."""
    event = request(locale="xx-XX")
    await dispatch(sqlite_db, tmp_path, event)
    from blume_contracts.envelope import RawEvent

    share_id = share_id_for(RawEvent.model_validate(event))
    async with sqlite_db.transaction() as session:
        share = await session.get(Share, share_id)
    assert share is not None
    assert (share.state, share.reason) == (ShareState.REJECTED, "unsupported_locale")


async def test_notification_failure_fails_the_share(sqlite_db: Database, tmp_path: Path) -> None:
    """share.notification.failed ends the share with share.failed, carrying the correlation id."""
    first = await dispatch(sqlite_db, tmp_path, request())
    share_id = first.of("share.accepted")[0].data.share_id
    upstream = await dispatch(sqlite_db, tmp_path, notification_failed(share_id))
    [failed] = upstream.of("share.failed")
    assert failed.data.share_id == share_id
    assert failed.data.reason == "smtp_rejected"
    assert failed.correlationid == EXAMPLE["correlationid"]


async def test_outcome_for_unknown_share_changes_nothing(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """A stray outcome for a share the dispatcher never made emits nothing."""
    upstream = await dispatch(sqlite_db, tmp_path, notification_failed("shr_" + "9" * 32))
    assert upstream.events == []


async def test_terminal_share_ignores_late_outcomes(sqlite_db: Database, tmp_path: Path) -> None:
    """Once failed, a share stays failed: a second failure emits no second share.failed."""
    first = await dispatch(sqlite_db, tmp_path, request())
    share_id = first.of("share.accepted")[0].data.share_id
    await dispatch(sqlite_db, tmp_path, notification_failed(share_id))
    late = notification_failed(share_id) | {"id": "nf-2"}
    upstream = await dispatch(sqlite_db, tmp_path, late)
    assert upstream.of("share.failed") == []


def revoke_request(share_id: str, tenant_id: str) -> dict[str, Any]:
    """share.revoke.requested for ``share_id``, asked on behalf of ``tenant_id``."""
    event = CloudEvent[Any](
        id=f"revoke-{tenant_id}",
        source="/omegaai/send-drawer",
        type="share.revoke.requested",
        time=now(),
        tenantid=tenant_id,
        correlationid=EXAMPLE["correlationid"],
        data=ShareRevokeRequested(share_id=share_id, requested_by="u-999"),
    )
    return json.loads(event.model_dump_json())


async def test_a_revocation_from_another_tenant_changes_nothing(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """Only the share's own tenant can revoke it: another tenant's request, even naming the
    right share id, emits no share.revoked and leaves the share as it was; its own works."""
    first = await dispatch(sqlite_db, tmp_path, request())
    share_id = first.of("share.accepted")[0].data.share_id
    foreign = await dispatch(sqlite_db, tmp_path, revoke_request(share_id, "other-hospital"))
    assert foreign.of("share.revoked") == []
    async with sqlite_db.transaction() as session:
        share = await session.get(Share, share_id)
    assert share is not None
    assert share.state is ShareState.ACCEPTED
    own = await dispatch(sqlite_db, tmp_path, revoke_request(share_id, "demo-hospital"))
    [revoked] = own.of("share.revoked")
    assert revoked.data.share_id == share_id
