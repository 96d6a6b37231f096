"""The recipient's side in a real headless Chromium: from the link in a real email (captured
by aiosmtpd) through the page, the sign-in code from the second email or the organisation's
sign-in, to the viewer; F1 help; expired, revoked, wrong-code, locked and SSO-mismatch
flows. ``blume-share run`` serves the workers and the gateway on RabbitMQ and PostgreSQL.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from blume_access_gateway.keys import GatewayKeys
from blume_access_gateway.tickets import verify_ticket
from blume_runtime.db import utcnow
from playwright.async_api import BrowserContext, Page, expect

from tests.browser.conftest import ViewerStub, code_in, link_in, save_screenshot
from tests.conftest import RunningSystem, blume_share, request_event

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.browser]


async def share_with_recipient(system: RunningSystem, tenant: str) -> str:
    """Publish an external-link request for ``tenant``; return the share id once accepted."""
    request = request_event()
    request["data"]["tenant_id"] = tenant
    request["tenantid"] = tenant
    system.publish(request)
    [accepted] = await system.wait_for("share.accepted", correlationid=None)
    return str(accepted["data"]["share_id"])


async def open_emailed_link(system: RunningSystem, smtp: Any, context: BrowserContext) -> Page:
    [message] = await smtp.wait_for(1)
    page = await context.new_page()
    answer = await page.goto(link_in(message, system.http_base))
    assert answer is not None
    assert answer.status == 200
    return page


async def press_f1(context: BrowserContext, page: Page) -> Page:
    """Press F1 on ``page``; return the help window it opens, loaded."""
    async with context.expect_page() as opened:
        await page.keyboard.press("F1")
    help_window = await opened.value
    await help_window.wait_for_load_state()
    return help_window


def ticket_from(url: str, system: RunningSystem) -> Any:
    """Check the viewer ticket as the viewer would, with the gateway's ticket key."""
    [ticket] = parse_qs(urlsplit(url).query)["ticket"]
    keys = GatewayKeys.from_secret(system.env["BLUME_GATEWAY_SECRET_KEY"].encode())
    return verify_ticket(ticket, keys.viewer_ticket, issuer=system.http_base, now=utcnow())


def audit_types(system: RunningSystem, share_id: str) -> list[str]:
    found = blume_share(
        "audit", "query", "--share-id", share_id, "--format", "jsonl", env=system.env
    )
    assert found.returncode == 0, found.stderr
    records = [json.loads(line) for line in found.stdout.splitlines() if line.strip()]
    return [str(record.get("event_type") or record.get("type")) for record in records]


async def test_email_otp_from_the_email_to_the_viewer(
    gateway_system: RunningSystem,
    smtp_server: Any,
    context: BrowserContext,
    viewer: ViewerStub,
    tmp_path: Path,
) -> None:
    """Link from the email, View study, the code from the second email, the viewer; F1 on
    the link page opens its help article; every step is an audited event."""
    system = gateway_system
    share_id = await share_with_recipient(system, "otp-hospital")
    page = await open_emailed_link(system, smtp_server, context)
    await expect(page.locator("h1")).to_have_text("An imaging study was shared with you")
    await expect(page.locator("main")).to_contain_text(
        "Dr. Alice Smith at Lakeshore General shared an imaging study with you."
    )
    await save_screenshot(page, "link-page", tmp_path)

    help_window = await press_f1(context, page)
    assert urlsplit(help_window.url).path == "/help/link-page"
    await expect(help_window.locator("article h1")).to_have_text("The link page")
    await help_window.close()

    await page.get_by_role("button", name="View study").click()
    await page.wait_for_url("**/code")
    await expect(page.locator("h1")).to_have_text("Enter your sign-in code")
    await save_screenshot(page, "code-page", tmp_path)
    messages = await smtp_server.wait_for(2)
    assert smtp_server.envelopes[1][1] == ["bob.jones@clinic.example"]
    code = code_in(messages[1])

    await page.get_by_label("Sign-in code").fill(code)
    await page.get_by_role("button", name="Continue").click()
    await page.wait_for_url(f"{viewer.url}?ticket=*")
    await expect(page.locator("h1")).to_have_text("Viewer stub")
    ticket = ticket_from(page.url, system)
    assert ticket.share_id == share_id
    assert ticket.use_number == 1

    [accessed] = await system.wait_for("share.link.accessed", share_id=share_id)
    assert accessed["data"]["auth_method"] == "email_otp"
    assert accessed["data"]["client"]["client_ip"] == "127.0.0.1"
    assert "HeadlessChrome" in accessed["data"]["client"]["user_agent"]
    await system.wait_for("share.link.opened", share_id=share_id)
    await system.wait_for("share.otp.requested", share_id=share_id)
    stored = audit_types(system, share_id)
    for event_type in ("share.link.opened", "share.otp.requested", "share.link.accessed"):
        assert event_type in stored
    logs = system.logs()
    assert code not in logs
    assert urlsplit(link_in(messages[0], system.http_base)).path not in logs


async def test_wrong_codes_then_locked(
    gateway_system: RunningSystem, smtp_server: Any, context: BrowserContext
) -> None:
    """Four wrong codes count down; the fifth locks the code; then even the right one fails.
    F1 on the code page opens the sign-in code article."""
    system = gateway_system
    share_id = await share_with_recipient(system, "otp-hospital")
    page = await open_emailed_link(system, smtp_server, context)
    await page.get_by_role("button", name="View study").click()
    await page.wait_for_url("**/code")
    code = code_in((await smtp_server.wait_for(2))[1])
    wrong = "000000" if code != "000000" else "111111"

    help_window = await press_f1(context, page)
    assert urlsplit(help_window.url).path == "/help/sign-in-code"
    await help_window.close()

    for tries_left in (4, 3, 2, 1):
        await page.get_by_label("Sign-in code").fill(wrong)
        await page.get_by_role("button", name="Continue").click()
        await expect(page.get_by_role("alert")).to_have_text(
            f"That code is not right. Tries left: {tries_left}."
        )
    await page.get_by_label("Sign-in code").fill(wrong)
    await page.get_by_role("button", name="Continue").click()
    await expect(page.get_by_role("alert")).to_contain_text("Too many wrong codes")
    await page.get_by_label("Sign-in code").fill(code)
    await page.get_by_role("button", name="Continue").click()
    await expect(page.get_by_role("alert")).to_contain_text("Too many wrong codes")

    denials = await system.wait_for("share.link.denied", count=6, share_id=share_id)
    assert [d["data"]["reason"] for d in denials] == ["wrong_code"] * 4 + ["locked"] * 2
    assert system.events("share.link.accessed") == []


def expire_link(system: RunningSystem, share_id: str) -> None:
    """Move the link's expiry into the past, in its store and in the gateway's projection of
    it (once the gateway has applied ``share.link.issued``, which the email may overtake)."""
    deadline = time.monotonic() + 10
    with psycopg.connect(system.database_url, autocommit=True) as connection:
        connection.execute(
            "UPDATE link_issuer_links SET expires_at = now() - interval '1 hour'"
            " WHERE share_id = %s",
            (share_id,),
        )
        while True:
            projected = connection.execute(
                "UPDATE access_gateway_links SET expires_at = now() - interval '1 hour'"
                " WHERE share_id = %s",
                (share_id,),
            )
            if projected.rowcount == 1:
                return
            assert time.monotonic() < deadline, "the gateway never projected the link"
            time.sleep(0.05)


async def test_expired_link_page(
    gateway_system: RunningSystem, smtp_server: Any, context: BrowserContext, tmp_path: Path
) -> None:
    """A link past its expiry: 410, the page says so and whom to ask; F1 explains it."""
    system = gateway_system
    share_id = await share_with_recipient(system, "demo-hospital")
    [message] = await smtp_server.wait_for(1)
    expire_link(system, share_id)
    page = await context.new_page()
    answer = await page.goto(link_in(message, system.http_base))
    assert answer is not None
    assert answer.status == 410
    await expect(page.locator("h1")).to_have_text("This link has expired")
    await expect(page.locator("main")).to_contain_text(
        "ask Dr. Alice Smith at Demo Hospital to share it again"
    )
    await save_screenshot(page, "expired-page", tmp_path)
    help_window = await press_f1(context, page)
    assert urlsplit(help_window.url).path == "/help/link-unavailable"
    [denied] = await system.wait_for("share.link.denied", share_id=share_id)
    assert denied["data"]["reason"] == "expired"


async def test_revoke_ends_the_link_within_a_second(
    gateway_system: RunningSystem, smtp_server: Any, context: BrowserContext, viewer: ViewerStub
) -> None:
    """The link works (policy none: straight to the viewer); ``blume-share revoke --wait 1``
    succeeds, so within a second of the request the page is 410, and so is the button."""
    system = gateway_system
    share_id = await share_with_recipient(system, "demo-hospital")
    await system.wait_for("share.completed", share_id=share_id)
    page = await open_emailed_link(system, smtp_server, context)
    link = page.url
    await page.get_by_role("button", name="View study").click()
    await page.wait_for_url(f"{viewer.url}?ticket=*")
    stale = await context.new_page()
    await stale.goto(link)  # opened before the revocation, pressed after

    revoked = blume_share("revoke", share_id, "--wait", "1", env=system.env)
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr

    answer = await page.goto(link)
    assert answer is not None
    assert answer.status == 410
    await expect(page.locator("h1")).to_have_text("This link is no longer available")
    await stale.get_by_role("button", name="View study").click()
    await expect(stale.locator("h1")).to_have_text("This link is no longer available")
    await system.wait_for("share.revoked", share_id=share_id)
    reasons = [d["data"]["reason"] for d in system.events("share.link.denied", share_id=share_id)]
    assert reasons == ["revoked", "revoked"]


async def test_sso_sign_in_and_mismatch(
    gateway_system: RunningSystem,
    smtp_server: Any,
    browser: Any,
    context: BrowserContext,
    viewer: ViewerStub,
) -> None:
    """The invited recipient signs in at the organisation's provider and reaches the viewer;
    someone else signing in with another account is refused (sso_mismatch)."""
    system = gateway_system
    share_id = await share_with_recipient(system, "sso-hospital")
    page = await open_emailed_link(system, smtp_server, context)
    link = page.url
    await page.get_by_role("button", name="View study").click()
    await page.wait_for_url("**/authorize?*")
    await page.fill("#login_email", "bob.jones@clinic.example")
    await page.click("#sign-in")
    await page.wait_for_url(f"{viewer.url}?ticket=*")
    [accessed] = await system.wait_for("share.link.accessed", share_id=share_id)
    assert accessed["data"]["auth_method"] == "sso"
    assert accessed["data"]["signed_in_as"] == "bob.jones@clinic.example"

    other = await browser.new_context()
    try:
        intruder = await other.new_page()
        await intruder.goto(link)
        await intruder.get_by_role("button", name="View study").click()
        await intruder.wait_for_url("**/authorize?*")
        await intruder.fill("#login_email", "mallory@elsewhere.example")
        await intruder.click("#sign-in")
        await expect(intruder.locator("h1")).to_have_text("You signed in with another account")
    finally:
        await other.close()
    [denied] = await system.wait_for("share.link.denied", share_id=share_id)
    assert denied["data"]["reason"] == "sso_mismatch"
    assert len([path for path in viewer.arrivals if path.startswith("/view?")]) == 1
