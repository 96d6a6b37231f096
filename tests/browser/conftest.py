"""Browser harness: the real ``blume-share run`` (workers and web gateway) on RabbitMQ,
PostgreSQL and an aiosmtpd SMTP server, driven by a real headless Chromium (Debian's
``chromium``, through Playwright's ``executable_path``), with an OpenID provider and a
viewer stand-in that the tests serve themselves on 127.0.0.1."""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.async_api import Browser, BrowserContext, async_playwright

from services.access_gateway.tests.fake_idp import FakeIdentityProvider
from tests.conftest import RunningSystem, free_port

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM = os.environ.get("BLUME_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SSO_SECRET_ENV = "BLUME_TEST_RECIPIENT_SSO_SECRET"
SSO_SECRET = "recipient-sso-secret"
PORTAL_SECRET = "portal-sso-secret"


class ThreadedApp:
    """An ASGI app served by uvicorn in a thread, on a free port of 127.0.0.1."""

    def __init__(self, app: FastAPI, port: int) -> None:
        self.port = port
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            assert time.monotonic() < deadline, "test server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@dataclass
class ViewerStub:
    """Stands in for a tenant's image viewer: records each arrival, shows a plain page."""

    port: int = field(default_factory=free_port)
    arrivals: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/view"

    def serve(self) -> ThreadingHTTPServer:
        arrivals = self.arrivals

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                arrivals.append(self.path)
                body = b"<!doctype html><title>Viewer stub</title><h1>Viewer stub</h1>"
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                return None

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


@pytest.fixture
def viewer() -> Iterator[ViewerStub]:
    stub = ViewerStub()
    server = stub.serve()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()


def _provider(client_id: str, secret: str) -> Iterator[tuple[FakeIdentityProvider, str]]:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    provider = FakeIdentityProvider(issuer, client_id=client_id, client_secret=secret)
    app = ThreadedApp(provider.asgi_app(), port)
    app.start()
    try:
        yield provider, issuer
    finally:
        app.stop()


@pytest.fixture
def recipient_idp() -> Iterator[tuple[FakeIdentityProvider, str]]:
    """The recipients' organisation's OpenID provider (the tenant policy's sso block)."""
    yield from _provider("blume-share", SSO_SECRET)


@pytest.fixture
def portal_idp() -> Iterator[tuple[FakeIdentityProvider, str]]:
    """The Blume portal's OpenID provider, for patient sign-in."""
    yield from _provider("blume-portal", PORTAL_SECRET)


def policy_yaml(viewer_url: str, sso_issuer: str) -> str:
    return f"""
tenants:
  demo-hospital:
    display_name: Demo Hospital
    recipient_auth: none
    viewer_url: {viewer_url}
  otp-hospital:
    display_name: Lakeshore General
    recipient_auth: email_otp
    viewer_url: {viewer_url}
  sso-hospital:
    display_name: Northern Health
    recipient_auth: sso
    viewer_url: {viewer_url}
    sso:
      issuer: {sso_issuer}
      client_id: blume-share
      client_secret_env: {SSO_SECRET_ENV}
      allowed_domains: [partner.example]
"""


@pytest.fixture
def gateway_system(
    system_env: dict[str, str],
    amqp_url: str,
    database_url: str,
    tmp_path: Path,
    viewer: ViewerStub,
    recipient_idp: tuple[FakeIdentityProvider, str],
    portal_idp: tuple[FakeIdentityProvider, str],
) -> Iterator[RunningSystem]:
    """``blume-share run`` with the gateway on a free port, emailing links that point at it."""
    policy = tmp_path / "tenants.yaml"
    policy.write_text(policy_yaml(viewer.url, recipient_idp[1]))
    gateway = f"http://127.0.0.1:{system_env['BLUME_HTTP_PORT']}"
    env = {
        **system_env,
        "BLUME_PUBLIC_BASE_URL": gateway,
        "BLUME_PORTAL_BASE_URL": f"{gateway}/blume",
        "BLUME_TENANT_POLICY_FILE": str(policy),
        SSO_SECRET_ENV: SSO_SECRET,
        "BLUME_PORTAL_OIDC_ISSUER": portal_idp[1],
        "BLUME_PORTAL_OIDC_CLIENT_ID": "blume-portal",
        "BLUME_PORTAL_OIDC_CLIENT_SECRET": PORTAL_SECRET,
    }
    running = RunningSystem(env, amqp_url, database_url, tmp_path / "system.log")
    running.start()
    try:
        yield running
    finally:
        code = running.stop()
        assert code == 0, f"blume-share exited with {code} on SIGTERM:\n{running.logs()[-4000:]}"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (see .ci/run)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile (cookies and all), sized for small screenshots."""
    fresh = await browser.new_context(viewport={"width": 760, "height": 620}, locale="en-CA")
    try:
        yield fresh
    finally:
        await fresh.close()


def email_text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def link_in(message: EmailMessage, gateway: str) -> str:
    [link] = set(re.findall(re.escape(gateway) + r"/s/[A-Za-z0-9_-]{43}", email_text(message)))
    return link


def code_in(message: EmailMessage) -> str:
    [code] = re.findall(r"(?m)^\s*(\d{6})\s*$", email_text(message))
    return code


async def save_screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """Take a screenshot; refresh docs/screenshots/ with it when BLUME_UPDATE_SCREENSHOTS=1."""
    shot = tmp_path / f"{name}.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 1000
    if os.environ.get("BLUME_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOTS / f"{name}.png")
    return shot
