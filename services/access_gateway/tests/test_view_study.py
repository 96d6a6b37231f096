"""POST /s/{token}, "View study": CSRF-protected; grants by the tenant's policy, within the
link's maximum number of uses; a grant sets a short session and redirects to the viewer
with a signed ticket that carries no PHI."""

from __future__ import annotations

from datetime import timedelta
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from blume_access_gateway.models import LinkGrant
from blume_access_gateway.tickets import InvalidTicketError, verify_ticket
from blume_runtime.tenants import TenantPolicy
from joserfc import jwt
from pydantic import ValidationError

from services.access_gateway.tests.conftest import PUBLIC, Harness, csrf_for


def press(client: Any, token: str) -> Any:
    """Open the link page, then press its button, as a browser would."""
    page = client.get(f"/s/{token}")
    return client.post(f"/s/{token}", data={"csrf": csrf_for(page.text, f"/s/{token}")})


def cookie_attributes(response: Any, name: str) -> dict[str, str]:
    for header in response.headers.get_list("set-cookie"):
        jar = SimpleCookie()
        jar.load(header)
        if name in jar:
            morsel = jar[name]
            return {key: str(morsel[key]) for key in ("httponly", "secure", "samesite", "max-age")}
    raise AssertionError(f"no {name} cookie set")


def test_no_auth_policy_grants_and_redirects_to_the_viewer_with_a_ticket(harness: Harness) -> None:
    """recipient_auth none: one press, a 303 to the tenant's viewer URL with a valid ticket."""
    token, link = harness.add_link()
    with harness.client() as client:
        granted = press(client, token)
    assert granted.status_code == 303
    location = granted.headers["location"]
    assert location.startswith("https://viewer.test/view?site=1&ticket=")
    ticket = parse_qs(urlsplit(location).query)["ticket"][0]
    checked = verify_ticket(
        ticket, harness.gateway.keys.viewer_ticket, issuer=PUBLIC, now=harness.clock.now
    )
    assert (checked.link_id, checked.share_id, checked.use_number) == (
        link.link_id,
        link.share_id,
        1,
    )
    [accessed] = harness.transport.events("share.link.accessed")
    assert accessed["data"]["auth_method"] == "none"
    assert accessed["data"]["use_number"] == 1
    assert accessed["data"]["client"]["client_ip"] == "203.0.113.7"


def test_the_ticket_carries_no_phi_and_no_token(harness: Harness) -> None:
    """The ticket's claims: issuer, audience, times, a nonce, the link, the share, the use."""
    token, _link = harness.add_link()
    with harness.client() as client:
        granted = press(client, token)
    ticket = parse_qs(urlsplit(granted.headers["location"]).query)["ticket"][0]
    claims = jwt.decode(ticket, _key(harness)).claims
    assert set(claims) == {"iss", "aud", "iat", "nbf", "exp", "jti", "link_id", "share_id", "use"}
    assert claims["exp"] - claims["iat"] == 60
    assert token not in ticket


def _key(harness: Harness) -> Any:
    from joserfc.jwk import OctKey

    return OctKey.import_key(harness.gateway.keys.viewer_ticket)


def test_ticket_expires_after_a_minute_and_needs_the_ticket_key(harness: Harness) -> None:
    """A viewer refuses a ticket a minute old, or checked with another key."""
    token, _link = harness.add_link()
    with harness.client() as client:
        granted = press(client, token)
    ticket = parse_qs(urlsplit(granted.headers["location"]).query)["ticket"][0]
    harness.clock.advance(seconds=61)
    with pytest.raises(InvalidTicketError):
        verify_ticket(
            ticket, harness.gateway.keys.viewer_ticket, issuer=PUBLIC, now=harness.clock.now
        )
    with pytest.raises(InvalidTicketError):
        verify_ticket(ticket, harness.gateway.keys.cookies, issuer=PUBLIC, now=harness.clock.now)


def test_grant_sets_a_short_strict_session_cookie(harness: Harness) -> None:
    """The session cookie is HttpOnly, Secure, SameSite=Strict and lives 30 minutes."""
    token, _link = harness.add_link()
    with harness.client() as client:
        granted = press(client, token)
    assert cookie_attributes(granted, "__Host-blume_access") == {
        "httponly": "True",
        "secure": "True",
        "samesite": "strict",
        "max-age": "1800",
    }


def test_post_without_a_valid_csrf_token_is_refused(harness: Harness) -> None:
    """No token, a forged one, or one from another link's page: 403 and a csrf denial."""
    token, _link = harness.add_link()
    other, _other_link = harness.add_link()
    with harness.client() as client:
        other_page = client.get(f"/s/{other}")
        client.get(f"/s/{token}")  # this browser has a CSRF cookie
        attempts = [
            {},
            {"csrf": "forged"},
            {"csrf": csrf_for(other_page.text, f"/s/{other}")},
        ]
        for data in attempts:
            refused = client.post(f"/s/{token}", data=data)
            assert refused.status_code == 403
            assert "This page has expired" in refused.text
    assert harness.rows(LinkGrant) == []
    denials = harness.transport.events("share.link.denied")
    assert [d["data"]["reason"] for d in denials] == ["csrf"] * 3


def test_csrf_token_needs_the_browsers_cookie(harness: Harness) -> None:
    """A token lifted from one browser's page does not work from another browser."""
    token, _link = harness.add_link()
    with harness.client() as first:
        csrf = csrf_for(first.get(f"/s/{token}").text, f"/s/{token}")
    with harness.client() as second:
        second.get(f"/s/{token}")
        assert second.post(f"/s/{token}", data={"csrf": csrf}).status_code == 403


def test_maximum_uses_are_enforced(harness: Harness) -> None:
    """Two uses allowed: two browsers get in, the third gets 410 and a max_uses denial."""
    token, _link = harness.add_link(max_uses=2)
    for _ in range(2):
        with harness.client() as client:
            assert press(client, token).status_code == 303
    with harness.client() as client:
        refused = press(client, token)
    assert refused.status_code == 410
    assert "This link has been used up" in refused.text
    assert [g.use_number for g in harness.rows(LinkGrant)] == [1, 2]
    assert harness.transport.events("share.link.denied")[-1]["data"]["reason"] == "max_uses"


def test_pressing_again_within_the_session_takes_no_new_use(harness: Harness) -> None:
    """The same browser coming back within its session gets a fresh ticket on the same use."""
    token, _link = harness.add_link(max_uses=1)
    with harness.client() as client:
        assert press(client, token).status_code == 303
        again = press(client, token)
    assert again.status_code == 303
    assert [g.use_number for g in harness.rows(LinkGrant)] == [1]
    uses = [e["data"]["use_number"] for e in harness.transport.events("share.link.accessed")]
    assert uses == [1, 1]


def test_expired_link_cannot_be_used(harness: Harness) -> None:
    """A page opened before expiry, pressed after: 410 and an expired denial, no grant."""
    token, _link = harness.add_link(expires_in=timedelta(minutes=5))
    with harness.client() as client:
        page = client.get(f"/s/{token}")
        harness.clock.advance(minutes=6)
        refused = client.post(f"/s/{token}", data={"csrf": csrf_for(page.text, f"/s/{token}")})
    assert refused.status_code == 410
    assert harness.rows(LinkGrant) == []
    assert harness.transport.events("share.link.denied")[-1]["data"]["reason"] == "expired"


def test_revoked_between_view_and_press(harness: Harness) -> None:
    """Revoked after the page was opened: the press is refused with 410."""
    token, link = harness.add_link()
    with harness.client() as client:
        page = client.get(f"/s/{token}")
        harness.revoke_link(link.link_id)
        refused = client.post(f"/s/{token}", data={"csrf": csrf_for(page.text, f"/s/{token}")})
    assert refused.status_code == 410
    assert harness.rows(LinkGrant) == []


def test_a_tenant_missing_from_the_policy_serves_no_study(harness: Harness) -> None:
    """A link whose tenant the policy file no longer has: 503, nothing granted."""
    token, _link = harness.add_link("gone-tenant")
    with harness.client() as client:
        refused = press(client, token)
    assert refused.status_code == 503
    assert harness.rows(LinkGrant) == []


def test_events_wait_in_the_outbox_when_the_broker_is_down(harness: Harness) -> None:
    """The page still works with the broker down; the event stays in the outbox for the sweep."""
    from blume_runtime.db import OutboxMessage

    token, _link = harness.add_link()
    harness.transport.fail = True
    with harness.client() as client:
        assert client.get(f"/s/{token}").status_code == 200
    assert harness.transport.published == []
    [waiting] = harness.rows(OutboxMessage)
    assert waiting.routing_key == "share.link.opened"
    harness.transport.fail = False
    harness.run(harness.gateway.events.relay.sweep(older_than=timedelta(0)))  # type: ignore[attr-defined]
    assert [e["type"] for e in harness.transport.events()] == ["share.link.opened"]
    assert harness.rows(OutboxMessage) == []


def test_item_5_the_access_session_ends_30_minutes_after_the_grant_however_often_pressed(
    harness: Harness,
) -> None:
    """Issue 12 item 5: pressing "View study" within the session shows the same use again
    without re-signing the cookie; 31 minutes after the grant the session is over, and a
    one-use link whose use is spent grants no new use and no viewer ticket (410 max_uses)."""
    token, _link = harness.add_link(max_uses=1)
    with harness.client() as client:
        assert press(client, token).status_code == 303
        harness.clock.advance(seconds=20 * 60)
        again = press(client, token)
        assert again.status_code == 303
        assert "__Host-blume_access" not in " ".join(again.headers.get_list("set-cookie"))
        harness.clock.advance(seconds=11 * 60)
        spent = press(client, token)
    assert spent.status_code == 410
    assert "location" not in spent.headers
    assert len(harness.rows(LinkGrant)) == 1
    assert [e["data"]["use_number"] for e in harness.transport.events("share.link.accessed")] == [
        1,
        1,
    ]
    assert harness.transport.events("share.link.denied")[-1]["data"]["reason"] == "max_uses"


def test_item_5_a_tenant_policy_may_shorten_the_access_session_never_lengthen_it(
    harness: Harness,
) -> None:
    """Issue 12 item 5: a tenant's access_session_minutes of 10 ends the session 10 minutes
    after the grant (the cookie says so too); a policy asking for more than 30 is refused."""
    token, _link = harness.add_link("brief-clinic", max_uses=1)
    with harness.client() as client:
        granted = press(client, token)
        assert cookie_attributes(granted, "__Host-blume_access")["max-age"] == "600"
        harness.clock.advance(seconds=9 * 60)
        assert press(client, token).status_code == 303
        harness.clock.advance(seconds=2 * 60)
        assert press(client, token).status_code == 410
    with pytest.raises(ValidationError, match="access_session_minutes"):
        TenantPolicy(display_name="Long", access_session_minutes=60)
