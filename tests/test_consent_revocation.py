"""Issue 12.2, end to end: a lock box set after a study was shared revokes what was sent.

Real RabbitMQ, PostgreSQL and aiosmtpd under ``blume-share run``: a link share and a Blume
share of the patient's study go out; then ``blume-share patients import`` sets both consent
directives on the account. ``patient.account.updated`` is the consent-change event: the
dispatcher revokes both shares naming the directive, the publisher hides the record entry,
the gateway answers 410 for the link, the sender is told by email, and the audit trail holds
each revocation with its directive.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSystem, blume_share, is_sender_notice, request_event
from tests.test_blume_path import PORTAL, blume_request, enrol
from tests.test_end_to_end import LINK, PHI, email_text

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

GATEWAY_REFUSES_WITHIN_SECONDS = 1.0


@pytest.fixture
def system_env(system_env: dict[str, str]) -> dict[str, str]:
    return {**system_env, "BLUME_PORTAL_BASE_URL": PORTAL}


def link_status(system: RunningSystem, token: str) -> int:
    try:
        with urllib.request.urlopen(f"{system.http_base}/s/{token}", timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def hidden_entries(system: RunningSystem) -> list[bool]:
    with psycopg.connect(system.database_url) as connection:
        rows = connection.execute("SELECT hidden_at FROM blume_record_entries").fetchall()
    return [row[0] is not None for row in rows]


async def test_a_later_lock_box_revokes_the_link_and_the_portal_entry(
    system: RunningSystem, smtp_server: Any, tmp_path: Path
) -> None:
    """Both directives imported after both shares went out: the link answers 410 within a
    second of share.revoked, the record entry is hidden, the sender gets one email per share
    (no PHI), and the audit holds share.revoked with the directive as the reason."""
    enrol(system, tmp_path, locale="en-CA")
    link_share = request_event()
    system.publish(link_share)
    [link_completed] = await system.wait_for("share.completed")
    system.publish(blume_request())
    await system.wait_for("share.completed", count=2)
    [link_email] = [m for m in await smtp_server.wait_for(2) if LINK.search(email_text(m))]
    token = LINK.findall(email_text(link_email))[0]
    assert link_status(system, token) == 200
    assert hidden_entries(system) == [False]

    enrol(system, tmp_path, locale="en-CA", consent=["withhold_external_links", "withhold_portal"])
    revoked = await system.wait_for("share.revoked", count=2)
    seen_at = time.monotonic()
    reasons = {event["data"]["method"]: event["data"]["reason"] for event in revoked}
    assert reasons == {
        "external_link": "consent_directive: withhold_external_links",
        "blume": "consent_directive: withhold_portal",
    }
    while (code := link_status(system, token)) != 410:
        assert time.monotonic() - seen_at < GATEWAY_REFUSES_WITHIN_SECONDS, code
        await asyncio.sleep(0.05)

    deadline = time.monotonic() + 30
    while hidden_entries(system) != [True]:
        assert time.monotonic() < deadline, "the record entry was not hidden"
        await asyncio.sleep(0.2)

    messages = await smtp_server.wait_for(4)
    notices = [message for message in messages if is_sender_notice(message)]
    assert len(notices) == 2
    for notice in notices:
        assert notice["To"].addresses[0].addr_spec == "alice@demo-hospital.example"
        assert "was revoked" in notice["Subject"]
        text = email_text(notice)
        assert "consent directive" in text
        for phi in PHI:
            assert phi not in text, f"PHI {phi!r} in the sender's email"

    link_share_id = link_completed["data"]["share_id"]
    audited = blume_share(
        "audit", "query", "--type", "share.revoked", "--format", "jsonl", env=system.env
    )
    assert audited.returncode == 0, audited.stderr
    records = [json.loads(line) for line in audited.stdout.splitlines() if line.strip()]
    by_share = {record["share_id"]: record["data"] for record in records}
    assert by_share[link_share_id]["reason"] == "consent_directive: withhold_external_links"
    assert by_share[link_share_id]["requested_by"] == "patient-consent"
    assert len(by_share) == 2
    status = blume_share("status", link_share_id, "--json", env=system.env)
    assert json.loads(status.stdout)["state"] == "revoked"
