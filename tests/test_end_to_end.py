"""A share request published by pika, followed to the email at a real SMTP server.

Real RabbitMQ (own vhost), real PostgreSQL (own database), real SMTP server (aiosmtpd), and
the real ``blume-share run`` process with all four workers.
"""

from __future__ import annotations

import json
import re
from email.message import EmailMessage
from typing import Any

import psycopg
import pytest

from tests.conftest import (
    PUBLIC_BASE_URL,
    RunningSystem,
    blume_share,
    is_sender_notice,
    request_event,
    share_emails,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

LINK = re.compile(re.escape(PUBLIC_BASE_URL) + r"/s/([A-Za-z0-9_-]{43})(?![A-Za-z0-9_-])")
PHI = [
    "DOE^JANE",
    "DOE",
    "MRN-0001",
    "1980-01-02",
    "ACC-2026-0001",
    "1.2.840.113619.2.55.3.604688119.868.1234567890.123",
    "CT CHEST W CONTRAST",
]


def email_text(message: EmailMessage) -> str:
    parts = [f"{key}: {value}" for key, value in message.items()]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            parts.append(part.get_content())
    return "\n".join(parts)


def all_rows(database_url: str) -> str:
    """Every row of every table of ours, in every service's schema, as text: where a leaked
    secret would show."""
    with psycopg.connect(database_url) as connection:
        tables = connection.execute(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        assert len(tables) > 20, "the services' schemas are missing"
        dump = []
        for schema, table in tables:
            for row in connection.execute(f'SELECT * FROM "{schema}"."{table}"'):
                dump.append(repr(row))
        return "\n".join(dump)


async def test_valid_request_yields_one_email_and_completed(
    system: RunningSystem, smtp_server: Any
) -> None:
    """One request: one email with a well-formed link, share.completed with its correlationid."""
    request = request_event()
    system.publish(request)
    accepted = await system.wait_for("share.accepted")
    share_id = accepted[0]["data"]["share_id"]
    completed = await system.wait_for("share.completed", share_id=share_id)
    assert completed[0]["correlationid"] == request["correlationid"]
    assert all(event["correlationid"] == request["correlationid"] for event in system.observed)

    [message] = await smtp_server.wait_for(1)
    assert smtp_server.envelopes[0][1] == ["bob.jones@clinic.example"]
    assert message.get_content_type() == "multipart/alternative"
    text = email_text(message)
    tokens = set(LINK.findall(text))
    assert len(tokens) == 1, "the text and HTML parts carry the same single link"
    token = tokens.pop()
    assert "Dr. Alice Smith" in text
    for phi in PHI:
        assert phi not in text, f"PHI {phi!r} in the email"

    rows = all_rows(system.database_url)
    assert token not in rows, "the raw token reached the database"
    logs = system.logs()
    assert token not in logs
    for phi in [*PHI, "bob.jones@clinic.example"]:
        assert phi not in logs, f"{phi!r} logged"

    verified = blume_share("audit", "verify", env=system.env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "OK" in verified.stdout
    status = blume_share("status", share_id, "--json", env=system.env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["state"] == "completed"


async def test_same_request_twice_makes_one_share_and_one_email(
    system: RunningSystem, smtp_server: Any
) -> None:
    """A request published twice (same id) is one share and one email."""
    request = request_event()
    system.publish(request)
    system.publish(request)
    await system.wait_for("share.completed")
    follow_up = request_event()
    system.publish(follow_up)  # flows behind the duplicate: proves it was handled, not stuck
    await system.wait_for("share.completed", count=2)
    assert len(smtp_server.messages) == 2
    assert len(system.events("share.accepted")) == 2
    assert system.queue_depth("blume.share.share_dispatcher.dlq") == 0


BAD_REQUESTS = [
    ("invalid_recipient_email", {"recipient": {"name": "Bob", "email": "bob@@clinic"}}),
    (
        "invalid_recipient_email",
        {"recipient": {"name": "Bob", "email": "b@c.example\r\nBcc: x@y.example"}},
    ),
    (
        "invalid_study_uid",
        {"study": {**request_event()["data"]["study"], "study_instance_uid": "1.2.x"}},
    ),
    ("unsupported_locale", {"locale": "de-DE"}),
    ("expiry_exceeds_policy", {"expires_in_hours": 500}),
    ("invalid_expiry", {"expires_in_hours": -5}),
    ("message_too_long", {"message": "x" * 2001}),
    ("unknown_method", {"method": "fax"}),
    ("invalid_recipient_name", {"recipient": {"name": "Bob\u0000", "email": "bob@clinic.example"}}),
]


async def test_bad_requests_are_rejected_and_the_queue_keeps_flowing(
    system: RunningSystem, smtp_server: Any
) -> None:
    """Each bad request yields share.rejected with its reason code and no email to a
    recipient; the sender of each (a known tenant's) is told, once, by email."""
    published = []
    for reason, changes in BAD_REQUESTS:
        event = request_event({**request_event()["data"], **changes})
        system.publish(event)
        published.append((reason, event))
    unknown_tenant = request_event(
        {**request_event()["data"], "tenant_id": "nowhere"}, tenantid="nowhere"
    )
    system.publish(unknown_tenant)
    published.append(("unknown_tenant", unknown_tenant))
    system.publish(b"this is not a CloudEvent")
    good = request_event()
    system.publish(good)

    rejected = await system.wait_for("share.rejected", count=len(published))
    by_correlation = {event["correlationid"]: event["data"] for event in rejected}
    for reason, event in published:
        assert by_correlation[event["correlationid"]]["reason"] == reason, by_correlation[
            event["correlationid"]
        ]
    await system.wait_for("share.completed")
    told = await system.wait_for(
        "share.notification.sent", count=len(BAD_REQUESTS) + 1, timeout=60
    )  # every known tenant's rejection, and the good request's link email
    assert len(share_emails(smtp_server.messages)) == 1
    notices = [message for message in smtp_server.messages if is_sender_notice(message)]
    assert len(notices) == len(BAD_REQUESTS) == len(told) - 1
    assert {message["To"].addresses[0].addr_spec for message in notices} == {
        "alice@demo-hospital.example"
    }
    assert system.queue_depth("blume.share.share_dispatcher.dlq") == 1
    logs = system.logs()
    assert "this is not a CloudEvent" not in logs
    assert "b@c.example" not in logs


async def test_audit_verify_fails_after_a_row_is_altered(system: RunningSystem) -> None:
    """Editing any stored audit row, even as a superuser, makes audit verify fail.

    The database refuses the edit to everyone; a superuser can turn the triggers off for
    the session first, and the hash chain still shows it.
    """
    system.publish(request_event())
    await system.wait_for("share.completed")
    before = blume_share("audit", "verify", env=system.env)
    assert before.returncode == 0, before.stdout + before.stderr
    with psycopg.connect(system.database_url, autocommit=True) as connection:
        connection.execute("SET session_replication_role = replica")
        connection.execute(
            "UPDATE audit_records SET payload = replace(payload, 'Alice', 'Mallory') "
            "WHERE event_type = 'study.send.requested'"
        )
    after = blume_share("audit", "verify", env=system.env)
    assert after.returncode == 1
    assert "BROKEN" in after.stdout


async def test_revoke_over_rabbitmq_is_audited(system: RunningSystem) -> None:
    """blume-share revoke on real services: share.revoked with the request's correlation id."""
    request = request_event()
    system.publish(request)
    [completed] = await system.wait_for("share.completed")
    share_id = completed["data"]["share_id"]
    revoked = blume_share("revoke", share_id, "--by", "u-123", env=system.env)
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    [event] = await system.wait_for("share.revoked")
    assert event["correlationid"] == request["correlationid"]
    assert event["data"]["requested_by"] == "u-123"
    with psycopg.connect(system.database_url) as connection:
        [(revoked_at,)] = connection.execute(
            "SELECT revoked_at FROM link_issuer_links WHERE share_id = %s", (share_id,)
        ).fetchall()
    assert revoked_at is not None
