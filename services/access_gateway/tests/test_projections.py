"""The gateway's projections: what it knows of links, revocations, accounts and entries comes
only from events, applied idempotently, the newest account state winning."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from blume_access_gateway import NAME, Freshness, build, queue_probe
from blume_access_gateway.freshness import PROBE_INTERVAL_SECONDS, Staleness
from blume_access_gateway.models import ProjectedAccount, ProjectedEntry, ProjectedLink
from blume_access_gateway.projections import apply_account, apply_link_issued, apply_published
from blume_contracts.artefacts import EXAMPLES_DIR
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import PatientAccountUpdated, ShareBlumePublished, ShareLinkIssued
from blume_runtime.app import Runtime
from blume_runtime.db import Database
from blume_runtime.settings import Settings
from blume_runtime.transport import OutgoingMessage

from services.access_gateway.tests.conftest import Harness

LINK_ISSUED = json.loads((EXAMPLES_DIR / "share.link.issued.json").read_text())


def test_a_link_announced_twice_is_one_link(harness: Harness) -> None:
    """A redelivered share.link.issued changes nothing."""
    _token, link = harness.add_link()
    row = harness.rows(ProjectedLink)[0]
    assert row.link_id == link.link_id
    harness.run(_apply_again(harness, link))
    assert [row.link_id for row in harness.rows(ProjectedLink)] == [link.link_id]


async def _apply_again(harness: Harness, link: ProjectedLink) -> None:

    data = {**LINK_ISSUED["data"], "link_id": link.link_id, "share_id": link.share_id}
    event = CloudEvent[ShareLinkIssued].model_validate({**LINK_ISSUED, "data": data})
    async with harness.db.transaction() as session:
        assert await apply_link_issued(session, event) is True


def test_a_link_event_without_the_gateways_fields_is_not_projected(harness: Harness) -> None:
    """An event from before the contract carried the token hash cannot make a usable link."""

    data = {k: v for k, v in LINK_ISSUED["data"].items() if k != "token_hash"}
    event = CloudEvent[ShareLinkIssued].model_validate({**LINK_ISSUED, "data": data})

    async def apply() -> bool:
        async with harness.db.transaction() as session:
            return await apply_link_issued(session, event)

    assert harness.run(apply()) is False
    assert harness.rows(ProjectedLink) == []


def test_an_older_account_update_arriving_late_changes_nothing(harness: Harness) -> None:
    """The portal's view of an account is its newest state, whatever the arrival order."""
    harness.add_patient("bp-0001", withhold_portal=True)
    [account] = harness.rows(ProjectedAccount)
    newest = account.updated_at

    older = PatientAccountUpdated(
        blume_patient_id="bp-0001",
        tenant_id="open-clinic",
        mrn="MRN-bp-0001",
        email="bp-0001@patients.example",
        locale="fr-CA",
        email_notifications=True,
        status="active",
        withhold_portal=False,
        withhold_external_links=False,
        updated_at=newest - timedelta(minutes=1),
    )
    event = CloudEvent[Any](
        id=str(uuid.uuid4()),
        source="/blume-share/blume_publisher",
        type="patient.account.updated",
        time=datetime.now(UTC),
        tenantid="open-clinic",
        correlationid="late",
        data=older,
    )

    async def apply() -> None:
        async with harness.db.transaction() as session:
            await apply_account(session, event)

    harness.run(apply())
    [account] = harness.rows(ProjectedAccount)
    assert account.withhold_portal is True
    assert account.locale == "en-CA"


def test_a_second_share_of_the_same_study_does_not_take_over_its_entry(
    harness: Harness,
) -> None:
    """The entry stays with the share that first published it, whose revocation hides it."""
    entry = harness.add_entry("bp-0001")

    again = ShareBlumePublished(
        share_id=f"shr_{uuid.uuid4().hex}",
        blume_patient_id="bp-0001",
        entry_id=entry.entry_id,
        newly_published=False,
        email_notifications=True,
        patient_email="bp-0001@patients.example",
        locale="en-CA",
    )
    event = CloudEvent[Any](
        id=str(uuid.uuid4()),
        source="/blume-share/blume_publisher",
        type="share.blume.published",
        time=datetime.now(UTC),
        tenantid="open-clinic",
        correlationid="second",
        data=again,
    )

    async def apply() -> None:
        async with harness.db.transaction() as session:
            await apply_published(session, event)

    harness.run(apply())
    [row] = harness.rows(ProjectedEntry)
    assert row.share_id == entry.share_id
    assert row.description == "CT CHEST W CONTRAST"


async def test_the_gateway_worker_projects_from_its_own_queue_and_reports_its_health(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """Through the runtime: stale until its consumer runs, then a published share.link.issued
    lands in the gateway's link projection and the gateway is current; stale again once
    stopped."""
    settings = Settings(state_dir=tmp_path)
    freshness = Freshness(5.0)
    runtime = Runtime(settings, [build(settings, freshness)], sqlite_db)
    freshness.attach(queue_probe(runtime.transport, NAME))
    assert await freshness.stale() is Staleness.DETACHED
    await runtime.start()
    try:
        body = json.dumps(LINK_ISSUED).encode()
        await runtime.publish(OutgoingMessage("share.link.issued", body, LINK_ISSUED["id"]))
        await runtime.wait_until_idle()
        async with sqlite_db.transaction() as session:
            link = await session.get(ProjectedLink, LINK_ISSUED["data"]["link_id"])
        assert link is not None
        assert link.token_hash == LINK_ISSUED["data"]["token_hash"]
        assert link.recipient_auth == "email_otp"
        assert link.max_uses == 5
        await asyncio.sleep(PROBE_INTERVAL_SECONDS * 1.5)
        assert await freshness.stale() is None
    finally:
        await runtime.stop()
    await asyncio.sleep(PROBE_INTERVAL_SECONDS * 1.5)
    assert await freshness.stale() is Staleness.DETACHED
