"""The Blume deep link in Chromium: the "Step into Blume" email's link (the portal front is
the gateway: BLUME_PORTAL_BASE_URL=<gateway>/blume) sends a signed-out patient to the
portal's sign-in and back to the study; F1 there opens the Blume help."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import BrowserContext, Page, expect

from services.access_gateway.tests.fake_idp import FakeIdentityProvider
from tests.browser.conftest import email_text
from tests.browser.test_recipient_access import press_f1
from tests.conftest import EXAMPLE, RunningSystem, blume_share, request_event

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.browser]

ACCOUNT = {
    "blume_patient_id": "bp-0001",
    "tenant_id": "demo-hospital",
    "mrn": "MRN-0001",
    "email": "jane.doe@mail.example",
    "locale": "en-CA",
    "email_notifications": True,
    "status": "active",
    "consent": [],
}


async def emailed_study_link(
    system: RunningSystem, smtp_server: Any, provider: FakeIdentityProvider, tmp_path: Path
) -> str:
    """Enrol Jane (with her portal identity), share a study into Blume, and return the
    study link of her "Step into Blume" email."""
    accounts = tmp_path / "accounts.jsonl"
    accounts.write_text(json.dumps(ACCOUNT) + "\n")
    imported = blume_share("patients", "import", str(accounts), env=system.env)
    assert imported.returncode == 0, imported.stderr
    provider.users["jane.doe@mail.example"] = {"blume_patient_id": "bp-0001"}
    data = {k: v for k, v in EXAMPLE["data"].items() if k not in {"recipient", "expires_in_hours"}}
    data.update(method="blume", patient_account={"blume_patient_id": "bp-0001"})
    system.publish(request_event(data))
    [message] = await smtp_server.wait_for(1)
    [study_link] = set(
        re.findall(
            re.escape(system.http_base) + r"/blume/studies/ent_[0-9a-f]{32}", email_text(message)
        )
    )
    return str(study_link)


async def signed_in_on_the_study(context: BrowserContext, study_link: str) -> Page:
    """Open the emailed link signed out, sign in as Jane, land on her study."""
    page = await context.new_page()
    await page.goto(study_link)
    await page.wait_for_url("**/authorize?*")  # signed out: off to the portal's sign-in
    await page.fill("#login_email", "jane.doe@mail.example")
    await page.click("#sign-in")
    await page.wait_for_url(study_link)
    await expect(page.locator("h1")).to_have_text("Your imaging study")
    return page


async def test_signed_out_patient_signs_in_and_lands_on_the_study(
    gateway_system: RunningSystem,
    smtp_server: Any,
    context: BrowserContext,
    portal_idp: tuple[FakeIdentityProvider, str],
    tmp_path: Path,
) -> None:
    """Email link → portal sign-in → back on the same study, which only its owner sees."""
    system = gateway_system
    provider, _issuer = portal_idp
    provider.users["someone.else@mail.example"] = {"blume_patient_id": "bp-9999"}
    study_link = await emailed_study_link(system, smtp_server, provider, tmp_path)
    page = await signed_in_on_the_study(context, study_link)
    await expect(page.locator("main")).to_contain_text("CT CHEST W CONTRAST")
    help_window = await press_f1(context, page)
    assert urlsplit(help_window.url).path == "/help/blume-study"
    [viewed] = await system.wait_for("share.blume.viewed")
    assert viewed["data"]["blume_patient_id"] == "bp-0001"

    stranger = await context.browser.new_context()  # type: ignore[union-attr]
    try:
        other = await stranger.new_page()
        await other.goto(study_link)
        await other.wait_for_url("**/authorize?*")
        await other.fill("#login_email", "someone.else@mail.example")
        await other.click("#sign-in")
        await expect(other.locator("h1")).to_have_text("Study not found")
    finally:
        await stranger.close()
    assert len(system.events("share.blume.viewed")) == 1


async def test_item_8_after_sign_out_back_and_reload_do_not_show_the_study(
    gateway_system: RunningSystem,
    smtp_server: Any,
    context: BrowserContext,
    portal_idp: tuple[FakeIdentityProvider, str],
    tmp_path: Path,
) -> None:
    """Issue 12 item 8 in Chromium: the patient presses Sign out on the study page; the back
    button and a reload then lead to the portal's sign-in, never to the study."""
    system = gateway_system
    study_link = await emailed_study_link(system, smtp_server, portal_idp[0], tmp_path)
    page = await signed_in_on_the_study(context, study_link)
    await page.click("#sign-out")
    await page.wait_for_url("**/signed-out")
    await expect(page.locator("h1")).to_have_text("You are signed out")
    [signed_out] = await system.wait_for("session.signed_out")
    assert signed_out["data"]["blume_patient_id"] == "bp-0001"

    await page.go_back()
    await page.wait_for_url("**/authorize?*")
    await expect(page.locator("body")).not_to_contain_text("CT CHEST W CONTRAST")
    await page.goto(study_link)
    await page.reload()
    await page.wait_for_url("**/authorize?*")
    await expect(page.locator("body")).not_to_contain_text("CT CHEST W CONTRAST")
    assert len(system.events("share.blume.viewed")) == 1
