"""Issue 12 item 3: one time zone per tenant (its policy's ``time_zone``) and one
formatting function (``blume_contracts.display.format_moment``) for pages and emails.

Here, outside the services, because it holds the access gateway's page and the notifier's
email side by side (a service's own tests import no other service)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from blume_contracts.events import Recipient, Sender, ShareLinkIssued
from blume_contracts.locales import Locale
from blume_notifier.render import build_link_email
from blume_runtime.tenants import TenantPolicy
from pydantic import ValidationError

from services.access_gateway.tests.conftest import Harness, make_harness

LINK = "https://share.test/s/example"


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """The access gateway's route-test harness (its own tests' fixture)."""
    yield from make_harness(tmp_path, monkeypatch)


def email_text(tenant_policy: TenantPolicy, expires_at: datetime, locale: Locale) -> str:
    """The link email's plain text, as the notifier builds it for this tenant."""
    issued = ShareLinkIssued(
        share_id="shr_" + "1" * 32,
        link_id="lnk_" + "1" * 32,
        token_fingerprint="sha256:" + "ab" * 16,
        sealed_link="sealed",
        expires_at=expires_at,
        recipient=Recipient(name="Dr. Bob Jones", email="bob.jones@clinic.example"),
        sender=Sender(user_id="u-1", name="Dr. Alice Smith", email="alice@demo.example"),
        organisation="Demo Hospital",
        locale=locale,
    )
    built = build_link_email(
        issued,
        LINK,
        mail_from="Blume Share <no-reply@blume-share.example>",
        message_id="<m@blume-share.example>",
        time_zone=tenant_policy.time_zone,
    )
    parsed = message_from_bytes(built.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    return str(body.get_content())


@pytest.mark.parametrize(
    ("tenant", "locale", "shown"),
    [
        ("open-clinic", "en-CA", "4 January 2027 at 09:04 EST"),
        ("open-clinic", "fr-CA", "4 janvier 2027 à 9 h 04 EST"),
        ("west-clinic", "en-CA", "4 January 2027 at 06:04 PST"),
        ("west-clinic", "fr-CA", "4 janvier 2027 à 6 h 04 PST"),
    ],
)
def test_item_3_the_same_instant_reads_the_same_on_the_page_and_in_the_email(
    harness: Harness, tenant: str, locale: Locale, shown: str
) -> None:
    """A link expiring at 14:04 UTC on 4 January 2027 reads the same on its link page and
    in its email, in the tenant's zone (America/Toronto by default; America/Vancouver for
    west-clinic), in en-CA and fr-CA."""
    expires_at = datetime(2027, 1, 4, 14, 4, tzinfo=UTC)
    token, _link = harness.add_link(
        tenant, locale=locale, expires_in=expires_at - harness.clock.now
    )
    with harness.client() as client:
        page = client.get(f"/s/{token}")
    assert page.status_code == 200
    assert shown in page.text
    assert shown in email_text(harness.gateway.policies[tenant], expires_at, locale)


def test_item_3_a_policys_time_zone_must_be_an_iana_name() -> None:
    """A time_zone that is not an IANA name is refused when the policy is read, by name."""
    with pytest.raises(ValidationError, match="time_zone"):
        TenantPolicy(display_name="Somewhere", time_zone="Mars/Olympus_Mons")
    assert TenantPolicy(display_name="Default").time_zone == "America/Toronto"


def test_item_3_an_expired_link_page_shows_the_expiry_in_the_tenants_zone(
    harness: Harness,
) -> None:
    """The 410 page of an expired link names its end in the tenant's zone, as the email did."""
    token, link = harness.add_link("west-clinic", expires_in=timedelta(hours=1))
    harness.clock.advance(seconds=2 * 3600)
    with harness.client() as client:
        gone = client.get(f"/s/{token}")
    assert gone.status_code == 410
    local = link.expires_at.astimezone(UTC) - timedelta(hours=8)  # PST in the test's season
    assert f"{local.hour:02d}:{local.minute:02d} P" in gone.text
