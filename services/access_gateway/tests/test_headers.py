"""Every response: no-store, no referrer, a strict CSP (own origin only, no framing), no
sniffing, no indexing. Logs name routes, never paths (paths carry tokens)."""

from __future__ import annotations

import re

import pytest
import structlog

from services.access_gateway.tests.conftest import Harness, csrf_for


def assert_secure_headers(response: object, path: str) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["cache-control"] == "no-store", path
    assert headers["referrer-policy"] == "no-referrer", path
    assert headers["x-content-type-options"] == "nosniff", path
    assert "noindex" in headers["x-robots-tag"], path
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp, path
    assert "frame-ancestors 'none'" in csp, path
    assert "script-src 'self'" in csp, path
    assert "unsafe-inline" not in csp, path
    # No third-party origin anywhere but, for an SSO link's page, its provider in form-action.
    for directive in csp.split(";"):
        if not directive.strip().startswith("form-action"):
            assert not re.search(r"https?://", directive), (path, directive)


@pytest.mark.parametrize(
    "path",
    [
        "/s/{token}",
        "/s/{unknown}",
        "/s/{expired}",
        "/s/{token}/code",
        "/help/index",
        "/help/link-page",
        "/help/no-such-topic",
        "/static/help.js",
        "/static/gateway.css",
        "/healthz",
        "/no/such/page",
        "/blume/studies/ent_00000000000000000000000000000000",
        "/blume/login",
        "/viewer?ticket=nope",
        "/sso/callback?code=x&state=y",
    ],
)
def test_every_get_carries_the_security_headers(harness: Harness, path: str) -> None:
    """Pages, redirects, errors and static files all carry the headers."""
    from datetime import timedelta

    token, _link = harness.add_link()
    expired, _old = harness.add_link(expires_in=timedelta(seconds=-1))
    target = path.format(token=token, unknown="u" * 43, expired=expired)
    with harness.client() as client:
        response = client.get(target)
    assert_secure_headers(response, path)


def test_posts_and_their_refusals_carry_the_headers(harness: Harness) -> None:
    """A granted press (a redirect), a CSRF refusal and a code entry all carry the headers."""
    token, _link = harness.add_link()
    with harness.client() as client:
        page = client.get(f"/s/{token}")
        assert_secure_headers(client.post(f"/s/{token}", data={"csrf": "bad"}), "csrf refusal")
        granted = client.post(f"/s/{token}", data={"csrf": csrf_for(page.text, f"/s/{token}")})
        assert_secure_headers(granted, "grant redirect")
        assert_secure_headers(client.post(f"/s/{token}/code", data={}), "code without cookie")


def test_an_unhandled_error_is_a_plain_500_page_with_the_headers(harness: Harness) -> None:
    """A failure inside a route: the error page (with its help link), nothing of the error."""
    token, _link = harness.add_link()

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(f"secret detail {token}")

    harness.gateway.access.open_page = broken  # type: ignore[method-assign]
    with harness.client(raise_server_exceptions=False) as client:
        response = client.get(f"/s/{token}")
    assert response.status_code == 500
    assert "Something went wrong" in response.text
    assert "secret detail" not in response.text
    assert_secure_headers(response, "500")


def test_logs_name_the_route_never_the_token(harness: Harness) -> None:
    """The access log line says /s/{token}, not the token; no address or user agent either."""
    token, _link = harness.add_link()
    with structlog.testing.capture_logs() as logs, harness.client() as client:
        client.get(f"/s/{token}")
    text = repr(logs)
    assert token not in text
    assert "203.0.113.7" not in text
    assert any(entry.get("route") == "/s/{token}" for entry in logs)
