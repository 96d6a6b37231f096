"""Sign-out (issue 12 item 8): a patient on the portal and a recipient after a grant see a
sign-out button on every signed-in page; POST /sign-out (CSRF-protected) ends the session
server-side, so a copied cookie no longer works, clears the cookies, asks the browser to
clear the site's data, and is audited (session.signed_out), in en-CA and fr-CA."""

from __future__ import annotations

from typing import Any

import pytest

from services.access_gateway.tests.conftest import CLIENT_IP, Harness, csrf_for
from services.access_gateway.tests.test_blume_deep_link import sign_in_patient
from services.access_gateway.tests.test_view_study import press

SIGN_OUT = "/sign-out"


def sign_out(client: Any, signed_in_page: str) -> Any:
    return client.post(SIGN_OUT, data={"csrf": csrf_for(signed_in_page, SIGN_OUT)})


def session_cookies(client: Any) -> dict[str, str]:
    return {name: value for name, value in client.cookies.items() if "csrf" not in name}


@pytest.mark.parametrize(
    ("locale", "button", "signed_out"),
    [
        ("en-CA", "Sign out", "You are signed out"),
        ("fr-CA", "Se déconnecter", "Vous êtes déconnecté"),
    ],
)
def test_item_8_a_patient_signs_out_and_a_copied_cookie_opens_nothing(
    harness: Harness, locale: str, button: str, signed_out: str
) -> None:
    """The study page carries the sign-out button; after signing out the study sends the
    browser to sign-in again, and so does the patient cookie copied before sign-out."""
    harness.add_patient("bp-0001", locale=locale)
    entry = harness.add_entry("bp-0001")
    path = f"/blume/studies/{entry.entry_id}"
    with harness.client() as client:
        sign_in_patient(harness, client, path, "bp-0001")
        study = client.get(path)
        assert study.status_code == 200
        assert button in study.text
        home = client.get("/blume/")
        assert SIGN_OUT in home.text
        copied = session_cookies(client)
        left = sign_out(client, study.text)
        assert left.status_code == 303
        assert left.headers["location"] == "/signed-out"
        assert left.headers["clear-site-data"] == '"cache", "cookies", "storage"'
        cleared = " ".join(left.headers.get_list("set-cookie"))
        assert "__Host-blume_patient=" in cleared
        assert "Max-Age=0" in cleared
        page = client.get("/signed-out", headers={"accept-language": locale[:2]})
        assert signed_out in page.text
        assert client.get(path).status_code == 303
    with harness.client(cookies=copied) as thief:
        assert thief.get(path).headers["location"].startswith("/blume/login")
    [event] = harness.transport.events("session.signed_out")
    assert event["tenantid"] == "open-clinic"
    assert event["data"]["kind"] == "patient"
    assert event["data"]["blume_patient_id"] == "bp-0001"
    assert event["data"]["client"]["client_ip"] == CLIENT_IP


def test_item_8_a_recipient_signs_out_and_the_copied_access_cookie_grants_nothing(
    harness: Harness,
) -> None:
    """After a grant the link page shows the sign-out button; after signing out, the
    access cookie copied before it takes no use and gets no viewer ticket."""
    token, link = harness.add_link(max_uses=1)
    with harness.client() as client:
        assert press(client, token).status_code == 303
        page = client.get(f"/s/{token}")
        assert "Sign out" in page.text
        copied = session_cookies(client)
        assert sign_out(client, page.text).status_code == 303
        assert "Sign out" not in client.get(f"/s/{token}").text
    with harness.client(cookies=copied) as thief:
        assert press(thief, token).status_code == 410
    [event] = harness.transport.events("session.signed_out")
    assert event["data"]["kind"] == "recipient"
    assert event["data"]["link_id"] == link.link_id
    assert event["data"]["share_id"] == link.share_id
    assert event["correlationid"] == link.correlation_id


def test_item_8_a_sign_out_without_the_pages_csrf_token_ends_nothing(harness: Harness) -> None:
    """A forged sign-out (no token or another page's) is a 403 and the patient stays in."""
    harness.add_patient("bp-0001")
    with harness.client() as client:
        sign_in_patient(harness, client, "/blume/", "bp-0001")
        assert client.post(SIGN_OUT, data={"csrf": "forged"}).status_code == 403
        assert client.post(SIGN_OUT).status_code == 403
        assert client.get("/blume/").status_code == 200
    assert harness.transport.events("session.signed_out") == []


def test_item_8_signed_out_pages_offer_no_sign_out(harness: Harness) -> None:
    """Someone not signed in sees no sign-out button on the link page."""
    token, _link = harness.add_link()
    with harness.client() as client:
        assert "Sign out" not in client.get(f"/s/{token}").text
