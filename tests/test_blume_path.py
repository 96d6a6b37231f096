"""Send to Blume, end to end: a request published by pika, followed into the patient's
record (PostgreSQL) and to the "Step into Blume" email (SMTP), and every privacy case.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from fhir.resources.imagingstudy import ImagingStudy

from tests.conftest import EXAMPLE, RunningSystem, blume_share, request_event, share_emails
from tests.test_end_to_end import PHI, email_text

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PORTAL = "https://portal.blume-test.example"
ACCOUNT = {
    "blume_patient_id": "bp-0001",
    "tenant_id": "demo-hospital",
    "mrn": "MRN-0001",
    "email": "jane.doe@mail.example",
    "locale": "fr-CA",
    "email_notifications": True,
    "status": "active",
    "consent": [],
}


@pytest.fixture
def system_env(system_env: dict[str, str]) -> dict[str, str]:
    return {**system_env, "BLUME_PORTAL_BASE_URL": PORTAL}


def enrol(system: RunningSystem, tmp_path: Path, **changes: Any) -> None:
    """Import the patient's account (as the portal would provide it)."""
    accounts = tmp_path / "accounts.jsonl"
    accounts.write_text(json.dumps({**ACCOUNT, **changes}) + "\n")
    imported = blume_share("patients", "import", str(accounts), env=system.env)
    assert imported.returncode == 0, imported.stderr


def blume_request(**changes: Any) -> dict[str, Any]:
    data = {k: v for k, v in EXAMPLE["data"].items() if k not in {"recipient", "expires_in_hours"}}
    data.update(method="blume", patient_account={"blume_patient_id": "bp-0001"}, **changes)
    return request_event(data)


def entries(system: RunningSystem) -> list[tuple[str, dict[str, Any]]]:
    with psycopg.connect(system.database_url) as connection:
        rows = connection.execute(
            "SELECT entry_id, imaging_study FROM blume_record_entries"
        ).fetchall()
    return [(row[0], row[1] if isinstance(row[1], dict) else json.loads(row[1])) for row in rows]


async def test_blume_share_publishes_once_and_invites_once(
    system: RunningSystem, smtp_server: Any, tmp_path: Path
) -> None:
    """One record entry with a valid ImagingStudy, one Step into Blume email; twice is once."""
    enrol(system, tmp_path)
    request = blume_request()
    system.publish(request)
    system.publish(request)
    [completed] = await system.wait_for("share.completed")
    assert completed["correlationid"] == request["correlationid"]
    assert completed["data"]["notification"] == "sent"

    [(entry_id, resource)] = entries(system)
    assert re.fullmatch(r"ent_[0-9a-f]{32}", entry_id)
    study = ImagingStudy.model_validate(resource)
    assert study.identifier[0].value == "urn:oid:" + EXAMPLE["data"]["study"]["study_instance_uid"]
    assert study.subject.reference == "Patient/bp-0001"

    [message] = await smtp_server.wait_for(1)
    assert smtp_server.envelopes[0][1] == ["jane.doe@mail.example"]
    assert message["Content-Language"] == "fr-CA"
    text = email_text(message)
    assert f"{PORTAL}/studies/{entry_id}" in text
    assert "Entrer dans Blume" in text
    for phi in PHI:
        assert phi not in text, f"PHI {phi!r} in the email"
    follow_up = blume_request()  # a later share of the same study: still one entry
    system.publish(follow_up)
    await system.wait_for("share.completed", count=2)
    assert len(entries(system)) == 1
    published = system.events("share.blume.published")
    assert [event["data"]["newly_published"] for event in published] == [True, False]


@pytest.mark.parametrize(
    ("account", "reason"),
    [
        (None, "patient_not_enrolled"),
        ({"status": "inactive"}, "patient_not_enrolled"),
        ({"tenant_id": "another-hospital"}, "patient_not_enrolled"),
        ({"mrn": "MRN-9999"}, "patient_mismatch"),
    ],
    ids=["unknown", "inactive", "other-tenant", "mrn-mismatch"],
)
async def test_ineligible_account_is_rejected(
    system: RunningSystem,
    smtp_server: Any,
    tmp_path: Path,
    account: dict[str, Any] | None,
    reason: str,
) -> None:
    """No account, an inactive one, or one for another person: rejected, nothing published."""
    if account is not None:
        enrol(system, tmp_path, **account)
    system.publish(blume_request())
    [rejected] = await system.wait_for("share.rejected")
    assert rejected["data"]["reason"] == reason
    assert entries(system) == []
    assert share_emails(smtp_server.messages) == []
    assert system.events("share.blume.requested") == []


async def test_withhold_portal_fails_the_share_and_publishes_nothing(
    system: RunningSystem, smtp_server: Any, tmp_path: Path
) -> None:
    """A withhold_portal directive ends the share with share.failed consent_directive."""
    enrol(system, tmp_path, consent=["withhold_portal"])
    system.publish(blume_request())
    [failed] = await system.wait_for("share.failed")
    assert failed["data"]["reason"] == "consent_directive"
    assert system.events("share.blume.withheld")[0]["data"]["reason"] == "consent_directive"
    assert entries(system) == []
    # The sender alone is told, with the reason in words and nothing of the patient.
    [notice] = await smtp_server.wait_for(1)
    assert notice["To"].addresses[0].addr_spec == "alice@demo-hospital.example"
    text = email_text(notice)
    assert "consent directive" in text
    for phi in PHI:
        assert phi not in text, f"PHI {phi!r} in the sender's email"
    assert share_emails(smtp_server.messages) == []


async def test_lock_box_rejects_an_external_link(
    system: RunningSystem, smtp_server: Any, tmp_path: Path
) -> None:
    """withhold_external_links on the patient's account refuses an external share."""
    enrol(system, tmp_path, consent=["withhold_external_links"])
    system.publish(request_event())
    [rejected] = await system.wait_for("share.rejected")
    assert rejected["data"]["reason"] == "consent_directive"
    assert system.events("share.link.requested") == []
    assert share_emails(smtp_server.messages) == []


async def test_notifications_off_publishes_without_email(
    system: RunningSystem, smtp_server: Any, tmp_path: Path
) -> None:
    """With notifications off the study is published, no email goes out, completion says so."""
    enrol(system, tmp_path, email_notifications=False)
    system.publish(blume_request())
    [completed] = await system.wait_for("share.completed")
    assert completed["data"]["notification"] == "suppressed_by_preference"
    assert len(entries(system)) == 1
    assert system.events("share.notification.suppressed")
    assert share_emails(smtp_server.messages) == []
    audited = blume_share("audit", "query", "--format", "jsonl", env=system.env)
    types = {json.loads(line)["event_type"] for line in audited.stdout.splitlines()}
    assert {"share.blume.published", "share.notification.suppressed"} <= types


def http(url: str, *, post: bytes | None = None) -> tuple[int, str]:
    """A request with no cookie at all, as a mail client's one-click POST is."""
    request = urllib.request.Request(url, data=post, method="POST" if post is not None else "GET")
    if post is not None:
        request.add_header("content-type", "application/x-www-form-urlencoded")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.status), answer.read().decode()


async def test_item_14_one_click_unsubscribe_stops_blume_emails_and_an_import_keeps_it(
    system: RunningSystem, smtp_server: Any, tmp_path: Path
) -> None:
    """Issue 12 item 14: the "Step into Blume" email carries List-Unsubscribe (an https URL
    with an opaque token, no PHI) and List-Unsubscribe-Post (RFC 8058). A GET shows a
    confirmation and changes nothing; a cookieless one-click POST answers 200, is audited,
    and blume_publisher switches the patient's emails off, so the next Blume share is
    suppressed; a later import saying "on" keeps the patient's newer choice and says so."""
    enrol(system, tmp_path)
    system.publish(blume_request())
    [message] = await smtp_server.wait_for(1)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    target = re.fullmatch(r"<(https://[^>]+)>", str(message["List-Unsubscribe"]))
    assert target is not None
    url = target.group(1)
    assert url.startswith("https://share.blume-test.example/unsubscribe/")
    for detail in [*PHI, "bp-0001", "jane.doe", "demo-hospital"]:
        assert detail not in url
    local = system.http_base + urlsplit(url).path

    status, page = http(local)
    assert status == 200
    assert "Ne plus recevoir ces courriels" in page  # the account's locale, fr-CA
    assert system.events("patient.notifications.unsubscribed") == []

    status, page = http(local, post=b"List-Unsubscribe=One-Click")
    assert status == 200
    assert "Vous ne recevrez plus de courriels de Blume" in page
    [unsubscribed] = await system.wait_for("patient.notifications.unsubscribed")
    assert unsubscribed["data"]["blume_patient_id"] == "bp-0001"
    await system.wait_for("patient.account.updated", count=2)
    assert system.events("patient.account.updated")[-1]["data"]["email_notifications"] is False

    system.publish(blume_request())
    await system.wait_for("share.notification.suppressed")
    assert len(smtp_server.messages) == 1

    accounts = tmp_path / "accounts.jsonl"
    accounts.write_text(json.dumps({**ACCOUNT, "email_notifications": True}) + "\n")
    imported = blume_share("patients", "import", str(accounts), env=system.env)
    assert imported.returncode == 0, imported.stderr
    assert "bp-0001: kept the patient's own choice of" in imported.stdout
    assert "(email notifications off) over the file's" in imported.stdout
    shown = blume_share("patients", "show", "bp-0001", "--json", env=system.env)
    assert json.loads(shown.stdout)["email_notifications"] is False
    audited = blume_share("audit", "query", "--format", "jsonl", env=system.env)
    types = {json.loads(line)["event_type"] for line in audited.stdout.splitlines()}
    assert "patient.notifications.unsubscribed" in types
