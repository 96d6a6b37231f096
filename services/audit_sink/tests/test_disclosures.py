"""The accounting of disclosures (HIPAA 164.528) for a patient with several shares."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from blume_audit_sink.append import append_entries
from blume_audit_sink.disclosures import (
    DisclosureReport,
    DisclosureRequest,
    accounting,
    as_csv,
    as_html,
    as_json,
    spreadsheet_safe,
)
from blume_contracts.audit_entry import prepare
from blume_runtime.db import Database

TENANT = "demo-hospital"
PATIENT = "MRN-0001"
FIRST_EVENT_TIME = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
"""When ``make_event``'s first event occurs; the rest follow a minute apart."""


@pytest.fixture
async def store(sqlite_db: Database, life: Any, make_event: Any) -> Database:
    """Patient MRN-0001: three shares to three recipients (one never emailed); another
    patient's share; and a Blume publication to the patient herself."""
    events = [
        *life(recipient=("Dr. Bob Jones", "bob.jones@clinic.example")),
        *life(recipient=("Dr. Carol Ng", "carol.ng@ortho.example"), description="MR KNEE"),
        *life(mrn="MRN-0002", recipient=("Dr. Dan Roe", "dan@else.example")),
        *life(recipient=("=HYPERLINK(1)", "eve@evil.example"), description="XR HAND")[:3],
        make_event(
            "share.blume.requested",
            {
                "share_id": "shr_" + "9" * 32,
                "tenant_id": TENANT,
                "blume_patient_id": "bp-0001",
                "study": {"study_instance_uid": "1.2.3.4", "patient_mrn": PATIENT},
            },
            tenant=TENANT,
        ),
        make_event(
            "share.blume.published",
            {
                "share_id": "shr_" + "9" * 32,
                "blume_patient_id": "bp-0001",
                "entry_id": "ent_" + "1" * 32,
                "newly_published": True,
                "email_notifications": True,
                "patient_email": "jane@example.org",
                "locale": "en-CA",
            },
            tenant=TENANT,
        ),
    ]
    for event in events:
        async with sqlite_db.transaction() as session:
            await append_entries(session, [prepare(event)])
    return sqlite_db


async def report_for(db: Database, **options: Any) -> DisclosureReport:
    async with db.transaction() as session:
        return await accounting(session, DisclosureRequest(TENANT, PATIENT, **options))


async def test_each_disclosure_of_the_patient_is_listed_with_recipient_what_and_why(
    store: Database,
) -> None:
    """Two emails went out for MRN-0001: date, name, address, description and purpose each."""
    report = await report_for(store, since=FIRST_EVENT_TIME - timedelta(days=1))
    assert [(d.recipient_name, d.recipient_address) for d in report.disclosures] == [
        ("Dr. Bob Jones", "bob.jones@clinic.example"),
        ("Dr. Carol Ng", "carol.ng@ortho.example"),
    ]
    first, second = report.disclosures
    assert first.description.startswith("Imaging study CT CHEST W CONTRAST (CT) of 2026-11-20")
    assert "MR KNEE" in second.description
    assert first.purpose.startswith("Treatment: shared by Dr. Alice Smith (u-123)")
    assert first.method == "Secure, time-limited link sent by email"
    assert first.disclosed_at < second.disclosed_at
    assert first.share_id.startswith("shr_")
    assert first.record.startswith(f"{TENANT}/")


async def test_a_publication_to_the_patient_herself_is_listed_only_on_request(
    store: Database,
) -> None:
    """164.528(a)(1)(i) leaves disclosures to the individual out; they can be asked for."""
    report = await report_for(
        store, since=FIRST_EVENT_TIME - timedelta(days=1), include_to_patient=True
    )
    to_patient = [d for d in report.disclosures if d.method.startswith("Published")]
    assert [(d.recipient_name, d.recipient_address) for d in to_patient] == [
        ("the patient", "jane@example.org")
    ]


async def test_the_period_bounds_the_report(store: Database) -> None:
    """Nothing before ``since``: a since after every event gives an empty report."""
    late = await report_for(store, since=FIRST_EVENT_TIME + timedelta(days=30))
    assert late.disclosures == []


async def test_csv_json_and_html_say_the_same(store: Database) -> None:
    """The three renderings carry the same disclosures; HTML escapes, CSV defuses formulas."""
    report = await report_for(store, since=FIRST_EVENT_TIME - timedelta(days=1))
    rows = list(csv.DictReader(io.StringIO(as_csv(report))))
    assert [row["recipient_address"] for row in rows] == [
        d.recipient_address for d in report.disclosures
    ]
    assert json.loads(as_json(report))["disclosures"][1]["recipient_name"] == "Dr. Carol Ng"
    html = as_html(report)
    assert "<td>Dr. Carol Ng</td>" in html
    assert "Patient (MRN): MRN-0001" in html


def test_cells_that_a_spreadsheet_would_run_are_defused() -> None:
    """A recipient name like =HYPERLINK(...) is written as text, not a formula."""
    assert spreadsheet_safe("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert spreadsheet_safe("Dr. Bob") == "Dr. Bob"


BLUME_SHARE = "shr_" + "8" * 32


@pytest.fixture
async def four_shares(sqlite_db: Database, life: Any, make_event: Any) -> Database:
    """Patient MRN-0001: an external share to Bob; a Blume share (published, Step into
    Blume emailed to her); an OTP-protected share to Carol, who was emailed a sign-in code;
    and a share to Dan, revoked after its email went."""
    external = life(recipient=("Dr. Bob Jones", "bob.jones@clinic.example"))
    otp = life(recipient=("Dr. Carol Ng", "carol.ng@ortho.example"), description="MR KNEE")
    otp_share = otp[1].data["share_id"]
    revoked = life(recipient=("Dr. Dan Roe", "dan.roe@else.example"), description="XR HAND")
    revoked_share = revoked[1].data["share_id"]
    blume = [
        make_event(
            "share.blume.requested",
            {
                "share_id": BLUME_SHARE,
                "tenant_id": TENANT,
                "blume_patient_id": "bp-0001",
                "study": {"study_instance_uid": "1.2.3.4", "patient_mrn": PATIENT},
            },
            tenant=TENANT,
        ),
        make_event(
            "share.blume.published",
            {
                "share_id": BLUME_SHARE,
                "blume_patient_id": "bp-0001",
                "entry_id": "ent_" + "1" * 32,
                "newly_published": True,
                "email_notifications": True,
                "patient_email": "jane@example.org",
                "locale": "en-CA",
            },
            tenant=TENANT,
        ),
        make_event(
            "share.notification.sent",
            {
                "share_id": BLUME_SHARE,
                "purpose": "share",
                "addressee": "patient",
                "channel": "email",
                "message_id": f"<{BLUME_SHARE}.blume@blume-share.example>",
                "recipient_email": "jane@example.org",
                "accepted_at": "2026-11-20T10:00:00+00:00",
            },
            tenant=TENANT,
        ),
    ]
    sign_in_code = make_event(
        "share.notification.sent",
        {
            "share_id": otp_share,
            "purpose": "sign_in_code",
            "channel": "email",
            "message_id": f"<{otp_share}.chl_1@blume-share.example>",
            "recipient_email": "carol.ng@ortho.example",
            "accepted_at": "2026-11-20T11:00:00+00:00",
        },
        tenant=TENANT,
    )
    revocation = make_event(
        "share.revoked",
        {
            "share_id": revoked_share,
            "method": "external_link",
            "requested_by": "u-123",
            "revoked_at": "2026-11-20T12:00:00+00:00",
        },
        tenant=TENANT,
    )
    for event in [*external, *otp, *revoked, *blume, sign_in_code, revocation]:
        async with sqlite_db.transaction() as session:
            await append_entries(session, [prepare(event)])
    return sqlite_db


async def test_accounting_lists_only_third_parties_unless_asked_for_the_patient_and_codes(
    four_shares: Database,
) -> None:
    """External, OTP and revoked shares are disclosures to others; the Step into Blume
    email, the publication into her record and the sign-in code email are not, and appear
    (marked by audience) only with include_to_patient."""
    since = FIRST_EVENT_TIME - timedelta(days=1)
    report = await report_for(four_shares, since=since)
    assert [(d.recipient_address, d.audience) for d in report.disclosures] == [
        ("bob.jones@clinic.example", "third_party"),
        ("carol.ng@ortho.example", "third_party"),
        ("dan.roe@else.example", "third_party"),
    ]
    everything = await report_for(four_shares, since=since, include_to_patient=True)
    assert [(d.recipient_address, d.audience, d.method) for d in everything.disclosures] == [
        ("bob.jones@clinic.example", "third_party", "Secure, time-limited link sent by email"),
        ("carol.ng@ortho.example", "third_party", "Secure, time-limited link sent by email"),
        ("dan.roe@else.example", "third_party", "Secure, time-limited link sent by email"),
        ("jane@example.org", "patient", "Published into the patient's Blume record"),
        ("jane@example.org", "patient", "Step into Blume email to the patient"),
        ("carol.ng@ortho.example", "authentication", "Sign-in code sent by email"),
    ]
    code_row = everything.disclosures[-1]
    assert code_row.purpose.startswith("Authentication: a sign-in code")
    assert "MR KNEE" not in code_row.description


async def test_a_blume_email_recorded_before_addressee_existed_still_counts_as_to_the_patient(
    store: Database, make_event: Any
) -> None:
    """An older Step into Blume record has no addressee: its share's Blume request says
    it went to the patient, so it stays out of the default accounting."""
    legacy_email = make_event(
        "share.notification.sent",
        {
            "share_id": "shr_" + "9" * 32,
            "channel": "email",
            "message_id": "<legacy.blume@blume-share.example>",
            "recipient_email": "jane@example.org",
            "accepted_at": "2026-11-20T10:00:00+00:00",
        },
        tenant=TENANT,
    )
    async with store.transaction() as session:
        await append_entries(session, [prepare(legacy_email)])
    report = await report_for(store, since=FIRST_EVENT_TIME - timedelta(days=1))
    assert "jane@example.org" not in [d.recipient_address for d in report.disclosures]
