"""The sender's side in a real headless Chromium, on ``blume-share run`` (workers and
gateway on RabbitMQ and PostgreSQL, emails through aiosmtpd): the launch API (the client
library's ``LaunchClient`` with a token from ``blume-share launch-client create``), the
prefilled page, Send to External User and Send to Blume, the recipient's side, the live
status view, Revoke; every URL either browser requested is checked for PHI; axe-core finds
no accessibility violation on the page and the status view.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from blume_share_client import LaunchClient
from playwright.async_api import BrowserContext, Page, expect

from services.access_gateway.tests.fake_idp import FakeIdentityProvider
from tests.browser.conftest import email_text, link_in, save_screenshot
from tests.browser.test_blume_deep_link import ACCOUNT
from tests.browser.test_recipient_access import press_f1
from tests.conftest import EXAMPLE, RunningSystem, blume_share, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.browser]

STUDY = EXAMPLE["data"]["study"]
SENDER = EXAMPLE["data"]["sender"]
PHI = (
    STUDY["patient"]["name"],
    STUDY["patient"]["mrn"],
    STUDY["patient"]["birth_date"],
    STUDY["study_instance_uid"],
    STUDY["accession_number"],
    "DOE",
    "JANE",
)
AXE_SCRIPT = Path(__file__).parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
"""Pinned in ``tests/browser/axe/package.json``; ``make test`` installs it with ``npm ci``."""


def launch_token(system: RunningSystem) -> str:
    created = blume_share(
        "launch-client", "create", "--tenant", "demo-hospital", "--name", "omegaai", env=system.env
    )
    assert created.returncode == 0, created.stderr
    [token] = re.findall(r"lc_[A-Za-z0-9_-]{40,}", created.stdout)
    return token


def new_launch(system: RunningSystem, token: str, **extra: Any) -> str:
    with LaunchClient(system.http_base, token) as client:
        created = client.create_launch(
            tenant_id="demo-hospital", sender=SENDER, study=STUDY, **extra
        )
    return created.launch_url


def recorded(context: BrowserContext) -> list[str]:
    """Every URL the browser requests in ``context`` (pages, scripts, fetches, redirects)."""
    urls: list[str] = []
    context.on("request", lambda request: urls.append(request.url))
    return urls


def assert_no_phi(urls: list[str]) -> None:
    assert urls
    for url in urls:
        for value in PHI:
            assert value.lower() not in unquote(url).lower(), f"PHI in a requested URL: {url}"


@pytest.fixture
def axe_source() -> str:
    """axe-core's ``axe.min.js`` from the pinned npm package."""
    if not AXE_SCRIPT.exists():
        pytest.fail(f"no axe-core at {AXE_SCRIPT}: run `npm ci` in tests/browser/axe")
    return AXE_SCRIPT.read_text()


async def assert_accessible(page: Page, axe_source: str) -> None:
    # Evaluated through the DevTools protocol: the page's CSP (script-src 'self') rightly
    # refuses an injected <script>, and the page itself stays as served.
    await page.evaluate(axe_source)
    result = await page.evaluate(
        "axe.run(document, {runOnly: {type: 'tag', values:"
        " ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']}})"
    )
    violations = [(v["id"], [n["target"] for n in v["nodes"]]) for v in result["violations"]]
    assert violations == []


@pytest.fixture
def other_origin() -> Iterator[list[str]]:
    """A page on another site (``localhost``, not ``127.0.0.1``) linking to the URL the test
    puts in the list: OmegaAI's window opening the launch by a cross-site navigation."""
    target: list[str] = ["about:blank"]
    port = free_port()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f'<!doctype html><title>OmegaAI</title><a id="go" href="{target[0]}">Send</a>'
            encoded = body.encode()
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        def log_message(self, *_args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target.append(f"http://localhost:{port}/")
    try:
        yield target
    finally:
        server.shutdown()
        server.server_close()


# Two browser profiles, four workers and the whole share path in one test: more than the
# suite's 120 s default on a loaded machine (setup and teardown included), though each
# wait inside is bounded.
@pytest.mark.timeout(420)
async def test_external_user_from_launch_to_revoke(
    gateway_system: RunningSystem,
    smtp_server: Any,
    context: BrowserContext,
    axe_source: str,
    tmp_path: Path,
) -> None:
    """Launch API → prefilled page → Send to External User → the email → the recipient opens
    and is granted access → the status view shows opened and accessed within 2 s → Revoke
    (confirmed) → the recipient's next load is 410; no requested URL holds PHI."""
    system = gateway_system
    launch_url = new_launch(system, launch_token(system))
    sender_urls = recorded(context)
    page = await context.new_page()
    await page.goto(launch_url)
    await page.wait_for_url(f"{system.http_base}/send")
    await expect(page.locator("h1")).to_have_text("Share a study")
    assert "DOE^JANE" not in await page.title()
    await expect(page.locator("[data-field=patient]")).to_have_text("DOE^JANE")
    await expect(page.locator("main")).to_contain_text("MRN-0001")
    await expect(page.locator("[data-field=sender]")).to_contain_text("Dr. Alice Smith")
    await assert_accessible(page, axe_source)
    await save_screenshot(page, "sender-page", tmp_path)
    help_window = await press_f1(context, page)
    assert urlsplit(help_window.url).path == "/help/sharing-page"
    await help_window.close()

    # Keyboard only: choose the method, fill the fields, send.
    await page.get_by_label("Send to External User").check()
    await page.get_by_label("Recipient's name").fill("Dr. Bob Jones")
    await page.get_by_label("Recipient's email").fill("bob.jones@clinic.example")
    await page.get_by_label("Recipient's email").press("Tab")
    await page.get_by_role("button", name="Send").focus()
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r".*/send/shares/shr_[0-9a-f]{32}$"))
    share_id = page.url.rsplit("/", 1)[1]
    [requested] = await system.wait_for("share.accepted", share_id=share_id)
    assert requested["data"]["method"] == "external_link"

    [message] = await smtp_server.wait_for(1)
    recipient = await context.browser.new_context()  # type: ignore[union-attr]
    try:
        recipient_urls = recorded(recipient)
        link_page = await recipient.new_page()
        answer = await link_page.goto(link_in(message, system.http_base))
        assert answer is not None
        assert answer.status == 200
        await link_page.get_by_role("button", name="View study").click()
        await link_page.wait_for_url("**/view?ticket=*")
        granted_at = time.monotonic()
        await expect(page.locator("[data-step=opened]")).to_contain_text(
            "Opened 1 time", timeout=2000
        )
        await expect(page.locator("[data-step=accessed]")).to_contain_text(
            "Access granted 1 time", timeout=2000
        )
        shown_after = time.monotonic() - granted_at
        assert shown_after < 2.0
        await assert_accessible(page, axe_source)
        await save_screenshot(page, "sender-status-opened", tmp_path)

        await page.get_by_role("link", name="Revoke").click()
        await expect(page.locator("h1")).to_have_text("Revoke this share?")
        await save_screenshot(page, "sender-revoke-confirm", tmp_path)
        await page.get_by_role("button", name="Yes, revoke").click()
        revoked_at = time.monotonic()
        link = link_in(message, system.http_base)
        while True:
            again = await link_page.goto(link)
            assert again is not None
            if again.status == 410:
                break
            assert time.monotonic() - revoked_at < 1.0, "the link still worked 1 s after Revoke"
        await expect(page.locator("[data-step=revoked]")).to_contain_text("Revoked", timeout=2000)
        assert_no_phi(recipient_urls)
    finally:
        await recipient.close()
    assert_no_phi(sender_urls)
    again = await (await context.new_page()).goto(launch_url)
    assert again is not None
    assert again.status == 410


ACCOUNTS = [
    ACCOUNT,
    {
        **ACCOUNT,
        "blume_patient_id": "bp-0002",
        "email": "jane.doe.2@mail.example",
        "consent": ["withhold_portal"],
    },
]


@pytest.mark.timeout(420)
async def test_send_to_blume_enrolled_and_withheld(
    gateway_system: RunningSystem,
    smtp_server: Any,
    context: BrowserContext,
    other_origin: list[str],
    portal_idp: tuple[FakeIdentityProvider, str],
    tmp_path: Path,
) -> None:
    """Opened by a cross-site navigation from another origin: the session survives. An
    enrolled patient: Send to Blume publishes, the patient signs in and views the study,
    the status view shows it within 2 s, Revoke hides it again; a withheld patient:
    the page says so and Send to Blume cannot be chosen or sent. No URL holds PHI."""
    system = gateway_system
    accounts = tmp_path / "accounts.jsonl"
    accounts.write_text("".join(json.dumps(account) + "\n" for account in ACCOUNTS))
    imported = blume_share("patients", "import", str(accounts), env=system.env)
    assert imported.returncode == 0, imported.stderr
    await system.wait_for("patient.account.updated", count=2)
    token = launch_token(system)
    urls = recorded(context)

    enrolled_launch = new_launch(system, token, patient_account={"blume_patient_id": "bp-0001"})
    other_origin[0] = enrolled_launch
    page = await context.new_page()
    await page.goto(other_origin[1])
    await page.click("#go")
    await page.wait_for_url(f"{system.http_base}/send")
    await expect(page.locator("#blume-readiness")).to_have_attribute("data-readiness", "enrolled")
    await page.get_by_label("Send to Blume").check()
    await page.get_by_role("button", name="Send").click()
    await page.wait_for_url(re.compile(r".*/send/shares/shr_[0-9a-f]{32}$"))
    share_id = page.url.rsplit("/", 1)[1]
    await system.wait_for("share.completed", share_id=share_id)
    await expect(page.locator("[data-step=sent]")).to_have_attribute("data-done", "true")
    [message] = await smtp_server.wait_for(1)
    [study_link] = set(
        re.findall(
            re.escape(system.http_base) + r"/blume/studies/ent_[0-9a-f]{32}", email_text(message)
        )
    )
    portal_idp[0].users["jane.doe@mail.example"] = {"blume_patient_id": "bp-0001"}
    patient = await context.browser.new_context()  # type: ignore[union-attr]
    try:
        patient_urls = recorded(patient)
        record = await patient.new_page()
        await record.goto(study_link)
        await record.wait_for_url("**/authorize?*")
        await record.fill("#login_email", "jane.doe@mail.example")
        await record.click("#sign-in")
        await record.wait_for_url(study_link)
        await expect(record.locator("h1")).to_have_text("Your imaging study")
        viewed_at = time.monotonic()
        await expect(page.locator("[data-step=accessed]")).to_contain_text(
            "Viewed by the patient 1 time", timeout=2000
        )
        assert time.monotonic() - viewed_at < 2.0
        await page.get_by_role("link", name="Revoke").click()
        await page.get_by_role("button", name="Yes, revoke").click()
        await system.wait_for("share.revoked", share_id=share_id)
        await expect(page.locator("[data-step=revoked]")).to_contain_text("Revoked", timeout=2000)
        await record.reload()
        await expect(record.locator("h1")).to_have_text("Study not found")
        assert_no_phi(patient_urls)
    finally:
        await patient.close()

    withheld_launch = new_launch(system, token, patient_account={"blume_patient_id": "bp-0002"})
    withheld = await context.new_page()
    await withheld.goto(withheld_launch)
    await expect(withheld.locator("#blume-readiness")).to_have_attribute(
        "data-readiness", "withheld"
    )
    await expect(withheld.locator("#blume-readiness")).to_contain_text("consent directives")
    await expect(withheld.get_by_label("Send to Blume")).to_be_disabled()
    sent_before = len(system.events("study.send.requested"))
    await withheld.get_by_label("Recipient's name").fill("")
    await withheld.get_by_role("button", name="Send").click()
    await expect(withheld.locator("#recipient_name-error")).to_be_visible()
    assert len(system.events("study.send.requested")) == sent_before
    await expect(withheld.locator(".earlier li")).to_have_count(1)  # the sender's Blume share
    await expect(withheld.locator(".earlier li")).to_contain_text("revoked")
    assert_no_phi(urls)


async def test_french_page_and_help(
    gateway_system: RunningSystem, browser: Any, axe_source: str
) -> None:
    """A fr-CA launch: the page, its errors and its F1 help are in French."""
    system = gateway_system
    with LaunchClient(system.http_base, launch_token(system)) as client:
        created = client.create_launch(
            tenant_id="demo-hospital", sender=SENDER, study=STUDY, locale="fr-CA"
        )
    context = await browser.new_context(locale="fr-CA")
    try:
        page = await context.new_page()
        await page.goto(created.launch_url)
        await expect(page.locator("h1")).to_have_text("Partager un examen")
        await expect(page.locator("html")).to_have_attribute("lang", "fr")
        await page.get_by_label("Courriel du destinataire").fill("pas-une-adresse")
        await page.get_by_label("Nom du destinataire").fill("Dr Bob Jones")
        await page.get_by_role("button", name="Envoyer", exact=True).click()
        await expect(page.locator("#recipient_email-error")).to_contain_text(
            "adresse courriel valide"
        )
        await assert_accessible(page, axe_source)
        help_window = await press_f1(context, page)
        assert urlsplit(help_window.url).path == "/help/sharing-page"
        await expect(help_window.locator("article h1")).to_have_text("La page de partage")
    finally:
        await context.close()
