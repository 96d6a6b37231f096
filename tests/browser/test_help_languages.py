"""F1 in the page's language, in a real headless Chromium against ``blume-share run``: a
recipient whose browser prefers English opens a link shared in French (fr-CA); the link
page is French, and F1 opens the French article, then follows its links in French."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import BrowserContext, expect

from tests.browser.conftest import link_in
from tests.browser.test_recipient_access import press_f1
from tests.conftest import RunningSystem, request_event

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.browser]


async def test_f1_on_a_french_page_opens_the_french_article(
    gateway_system: RunningSystem, smtp_server: Any, context: BrowserContext
) -> None:
    """The browser asks for en-CA; the share is fr-CA. F1 on the link page opens
    /help/link-page in French, and the article's own links stay French."""
    system = gateway_system
    request = request_event()
    request["data"]["locale"] = "fr-CA"
    system.publish(request)
    [message] = await smtp_server.wait_for(1)
    page = await context.new_page()
    answer = await page.goto(link_in(message, system.http_base))
    assert answer is not None
    assert answer.status == 200
    assert await page.evaluate("navigator.language") == "en-CA"
    await expect(page.locator("h1")).to_have_text("Un examen d'imagerie a été partagé avec vous")

    help_window = await press_f1(context, page)
    opened = urlsplit(help_window.url)
    assert opened.path == "/help/link-page"
    assert parse_qs(opened.query) == {"lang": ["fr"]}
    await expect(help_window.locator("html")).to_have_attribute("lang", "fr")
    await expect(help_window.locator("article h1")).to_have_text("La page du lien")

    await help_window.get_by_role("link", name="Votre code de connexion").first.click()
    await help_window.wait_for_url("**/help/sign-in-code?lang=fr")
    await expect(help_window.locator("article h1")).to_have_text("Votre code de connexion")
    await help_window.close()
