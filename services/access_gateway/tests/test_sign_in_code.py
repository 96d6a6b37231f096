"""email_otp links: a 6-digit code emailed to the invited address (via share.otp.requested),
valid 10 minutes, 5 wrong tries lock it, only the newest code counts, stored as a keyed hash
and compared in constant time; it works only in the browser that asked for it."""

from __future__ import annotations

import hashlib
from typing import Any

from blume_access_gateway.models import LinkGrant, OtpChallenge
from blume_runtime.sealing import Sealer

from services.access_gateway.tests.conftest import Harness, csrf_for
from services.access_gateway.tests.test_view_study import press


def ask_for_code(harness: Harness, client: Any, token: str) -> tuple[Any, str]:
    """Press View study on an email_otp link; return the response and the emailed code."""
    asked = press(client, token)
    request = harness.transport.events("share.otp.requested")[-1]
    code = Sealer.from_settings(harness.gateway.settings).unseal(request["data"]["sealed_code"])
    return asked, code


def enter(client: Any, token: str, code: str) -> Any:
    page = client.get(f"/s/{token}/code")
    return client.post(
        f"/s/{token}/code",
        data={"code": code, "csrf": csrf_for(page.text, f"/s/{token}/code")},
    )


def otp_link(harness: Harness, **kwargs: Any) -> tuple[str, Any]:
    return harness.add_link("otp-hospital", auth="email_otp", **kwargs)


def test_pressing_view_emails_a_code_and_opens_the_code_page(harness: Harness) -> None:
    """A share.otp.requested for the invited recipient, sealed; then the code page."""
    token, link = otp_link(harness)
    with harness.client() as client:
        asked, code = ask_for_code(harness, client, token)
        assert asked.status_code == 303
        assert asked.headers["location"] == f"/s/{token}/code"
        page = client.get(f"/s/{token}/code")
    assert page.status_code == 200
    assert "Enter your sign-in code" in page.text
    assert code.isdigit()
    assert len(code) == 6
    [request] = harness.transport.events("share.otp.requested")
    data = request["data"]
    assert data["recipient"] == {"name": "Dr. Bob Jones", "email": "bob.jones@clinic.example"}
    assert data["link_id"] == link.link_id
    assert code not in str(request)
    assert request["correlationid"] == link.correlation_id


def test_the_code_is_stored_only_as_a_keyed_hash(harness: Harness) -> None:
    """Neither the code nor its plain SHA-256 is in the database."""
    token, _link = otp_link(harness)
    with harness.client() as client:
        _asked, code = ask_for_code(harness, client, token)
    [challenge] = harness.rows(OtpChallenge)
    assert code not in repr(challenge)
    assert challenge.code_hash != hashlib.sha256(code.encode()).hexdigest()
    assert (
        challenge.code_hash
        != hashlib.sha256(f"{challenge.challenge_id}:{code}".encode()).hexdigest()
    )


def test_the_right_code_grants_access_once(harness: Harness) -> None:
    """The right code: redirect to the viewer, a grant by email_otp; the code cannot be reused."""
    token, _link = otp_link(harness)
    with harness.client() as client:
        _asked, code = ask_for_code(harness, client, token)
        pending = client.cookies.get("__Host-blume_otp") or ""
        granted = enter(client, token, code)
        assert granted.status_code == 303
        assert granted.headers["location"].startswith("https://viewer.test/view?ticket=")
    with harness.client() as replay:  # the same code and cookie again, from a fresh session
        replay.cookies.set("__Host-blume_otp", pending, domain="share.test")
        assert enter(replay, token, code).status_code == 400
    [accessed] = harness.transport.events("share.link.accessed")
    assert accessed["data"]["auth_method"] == "email_otp"
    assert [grant.auth_method for grant in harness.rows(LinkGrant)] == ["email_otp"]
    assert harness.rows(OtpChallenge)[0].consumed_at is not None


def test_spaces_in_the_typed_code_are_forgiven(harness: Harness) -> None:
    """ "123 456" works as "123456"."""
    token, _link = otp_link(harness)
    with harness.client() as client:
        _asked, code = ask_for_code(harness, client, token)
        assert enter(client, token, f"{code[:3]} {code[3:]}").status_code == 303


def test_a_wrong_code_says_how_many_tries_are_left(harness: Harness) -> None:
    """A wrong code: 400, "Tries left: 4", and a wrong_code denial."""
    token, _link = otp_link(harness)
    with harness.client() as client:
        _asked, code = ask_for_code(harness, client, token)
        wrong = enter(client, token, "000000" if code != "000000" else "111111")
    assert wrong.status_code == 400
    assert "That code is not right. Tries left: 4." in wrong.text
    assert harness.transport.events("share.link.denied")[-1]["data"]["reason"] == "wrong_code"


def test_five_wrong_codes_lock_it_even_against_the_right_one(harness: Harness) -> None:
    """The fifth wrong code locks the code: the right one no longer works; a new code does."""
    token, _link = otp_link(harness)
    wrong = "000000"
    with harness.client() as client:
        _asked, code = ask_for_code(harness, client, token)
        wrong = "000000" if code != "000000" else "111111"
        statuses = [enter(client, token, wrong).status_code for _ in range(5)]
        assert statuses == [400, 400, 400, 400, 403]
        locked = enter(client, token, code)
        assert locked.status_code == 403
        assert "Too many wrong codes" in locked.text
        _asked, fresh = ask_for_code(harness, client, token)
        assert enter(client, token, fresh).status_code == 303
    reasons = [d["data"]["reason"] for d in harness.transport.events("share.link.denied")]
    assert reasons == ["wrong_code"] * 4 + ["locked", "locked"]


def test_only_the_newest_code_counts(harness: Harness) -> None:
    """Asking again replaces the code: the first one is refused as expired."""
    token, _link = otp_link(harness)
    with harness.client() as client:
        _asked, first = ask_for_code(harness, client, token)
        first_cookie = client.cookies.get("__Host-blume_otp")
        _asked, _second = ask_for_code(harness, client, token)
        client.cookies.set("__Host-blume_otp", first_cookie or "", domain="share.test")
        stale = enter(client, token, first)
    assert stale.status_code == 400
    assert "expired or was replaced" in stale.text
    assert harness.transport.events("share.link.denied")[-1]["data"]["reason"] == "code_expired"
    challenges = harness.rows(OtpChallenge)
    assert sum(challenge.superseded_at is None for challenge in challenges) == 1


def test_a_code_lasts_ten_minutes(harness: Harness) -> None:
    """Eleven minutes later the right code is refused as expired."""
    token, _link = otp_link(harness)
    with harness.client() as client:
        _asked, code = ask_for_code(harness, client, token)
        harness.clock.advance(minutes=11)
        late = enter(client, token, code)
    assert late.status_code == 400
    assert harness.transport.events("share.link.denied")[-1]["data"]["reason"] == "code_expired"


def test_a_code_works_only_in_the_browser_that_asked(harness: Harness) -> None:
    """Another browser, with the code but not the asking browser's cookie, is sent back."""
    token, _link = otp_link(harness)
    with harness.client() as asker:
        _asked, _code = ask_for_code(harness, asker, token)
    with harness.client() as other:
        other.get(f"/s/{token}")
        assert other.get(f"/s/{token}/code").status_code == 303
    assert harness.rows(LinkGrant) == []


def test_no_code_is_sent_once_the_uses_are_spent(harness: Harness) -> None:
    """A link with its two uses spent emails no further code: 410 used up."""
    token, _link = otp_link(harness, max_uses=1)
    with harness.client() as client:
        _asked, code = ask_for_code(harness, client, token)
        assert enter(client, token, code).status_code == 303
    with harness.client() as late:
        refused = press(late, token)
    assert refused.status_code == 410
    assert len(harness.transport.events("share.otp.requested")) == 1


def test_ten_wrong_codes_over_the_links_life_lock_the_link_for_good(harness: Harness) -> None:
    """ "Send a new code" resets a code's five tries, not the link's ten: the tenth wrong
    code locks the link (code_attempts_exhausted), the right code no longer works and no
    new code is sent."""
    token, _link = otp_link(harness)
    with harness.client() as client:
        _asked, first = ask_for_code(harness, client, token)
        wrong = "000000" if first != "000000" else "111111"
        assert [enter(client, token, wrong).status_code for _ in range(5)][-1] == 403
        _asked, second = ask_for_code(harness, client, token)
        wrong = "000000" if second != "000000" else "111111"
        statuses = [enter(client, token, wrong).status_code for _ in range(5)]
        assert statuses == [400, 400, 400, 400, 403]
        assert "This link is locked" in enter(client, token, second).text
        codes_sent = len(harness.transport.events("share.otp.requested"))
        again = press(client, token)
    assert again.status_code == 403
    assert "This link is locked" in again.text
    assert len(harness.transport.events("share.otp.requested")) == codes_sent == 2
    assert harness.rows(LinkGrant) == []
    reasons = [d["data"]["reason"] for d in harness.transport.events("share.link.denied")]
    assert reasons[-3:] == ["code_attempts_exhausted"] * 3
    assert reasons.count("wrong_code") == 8
    [locked] = harness.transport.events("share.link.locked")
    assert locked["data"]["sender_email"] == "alice@demo-hospital.example"
    assert locked["data"]["reason"] == "code_attempts_exhausted"
    assert locked["data"]["recipient"]["name"] == "Dr. Bob Jones"
