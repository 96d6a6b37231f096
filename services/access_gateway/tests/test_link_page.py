"""GET /s/{token}: the page the email links to. It shows who shared and until when, no PHI,
and changes nothing: email security scanners fetch it before the person does."""

from __future__ import annotations

import html
import uuid
from datetime import timedelta
from typing import Any

from blume_access_gateway.models import LinkGrant, OtpChallenge, ProjectedLink
from sqlalchemy import event

from services.access_gateway.tests.conftest import CLIENT_IP, USER_AGENT, Harness

PHI = [
    "bob.jones@clinic.example",
    "Dr. Bob Jones",
    "alice@demo-hospital.example",
    "1.2.840.113619.2.55.3.604688119.868.1234567890.123",
]


def test_link_page_shows_sender_organisation_expiry_and_button(harness: Harness) -> None:
    """A usable link: 200 with the sender, the organisation, the expiry and a View study button."""
    token, _link = harness.add_link()
    with harness.client() as client:
        page = client.get(f"/s/{token}")
    assert page.status_code == 200
    assert "Dr. Alice Smith at Demo Hospital shared an imaging study with you." in page.text
    assert "This link works until" in page.text
    assert ">View study</button>" in page.text
    for phi in PHI:
        assert phi not in page.text, f"{phi!r} on the link page"


def test_link_page_view_is_audited_with_client_ip_and_user_agent(harness: Harness) -> None:
    """Each view is a share.link.opened event with the client's address and user agent."""
    token, link = harness.add_link()
    with harness.client() as client:
        client.get(f"/s/{token}")
    [opened] = harness.transport.events("share.link.opened")
    assert opened["tenantid"] == "open-clinic"
    assert opened["correlationid"] == link.correlation_id
    assert opened["data"] == {
        "share_id": link.share_id,
        "link_id": link.link_id,
        "client": {"client_ip": CLIENT_IP, "user_agent": USER_AGENT},
    }
    assert token not in str(harness.transport.events())


def test_get_changes_nothing_however_often_a_scanner_fetches(harness: Harness) -> None:
    """Scanners' GETs (and HEADs) use up no use, send no code and create no challenge."""
    token, _link = harness.add_link("otp-hospital", auth="email_otp", max_uses=1)
    with harness.client() as client:
        for _ in range(5):
            assert client.get(f"/s/{token}").status_code == 200
            assert client.head(f"/s/{token}").status_code in (200, 405)
            assert client.get(f"/s/{token}/code").status_code == 303  # no code was asked for
    assert harness.rows(LinkGrant) == []
    assert harness.rows(OtpChallenge) == []
    assert harness.transport.events("share.otp.requested") == []
    assert harness.transport.events("share.link.accessed") == []


def test_unknown_token_is_404_and_audited_without_the_token(harness: Harness) -> None:
    """A token that matches no link: 404, and a denial (reason unknown) with its fingerprint."""
    token = "x" * 43
    with harness.client() as client:
        page = client.get(f"/s/{token}")
    assert page.status_code == 404
    assert "This link does not work" in page.text
    [denied] = harness.transport.events("share.link.denied")
    assert denied["tenantid"] == "_unknown"
    assert denied["data"]["reason"] == "unknown"
    assert denied["data"]["share_id"] is None
    assert denied["data"]["token_fingerprint"].startswith("sha256:")
    assert token not in str(denied)


def test_unknown_and_known_tokens_do_the_same_work(harness: Harness) -> None:
    """The same SQL statements and one event on both paths, so timing tells nothing."""
    token, _link = harness.add_link()
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.split(maxsplit=1)[0].upper())

    event.listen(harness.db.engine.sync_engine, "before_cursor_execute", count)
    try:
        with harness.client() as client:
            client.get(f"/s/{token}")
            known, statements[:] = list(statements), []
            client.get(f"/s/{'y' * 43}")
            unknown = list(statements)
    finally:
        event.remove(harness.db.engine.sync_engine, "before_cursor_execute", count)
    assert known == unknown
    assert known.count("SELECT") >= 1
    assert [e["type"] for e in harness.transport.events()] == [
        "share.link.opened",
        "share.link.denied",
    ]


def test_expired_link_is_410_and_says_whom_to_ask(harness: Harness) -> None:
    """Past its expiry: 410, a page saying when it stopped and whom to ask; denial expired."""
    token, link = harness.add_link(expires_in=timedelta(hours=1))
    harness.clock.advance(hours=2)
    with harness.client() as client:
        page = client.get(f"/s/{token}")
    assert page.status_code == 410
    assert "This link has expired" in page.text
    assert "ask Dr. Alice Smith at Demo Hospital to share it again" in page.text
    assert ">View study<" not in page.text
    [denied] = harness.transport.events("share.link.denied")
    assert denied["data"]["reason"] == "expired"
    assert denied["data"]["link_id"] == link.link_id


def test_revoked_link_is_410(harness: Harness) -> None:
    """A link the link store marks revoked: 410 "no longer available"; denial revoked."""
    token, link = harness.add_link()
    harness.revoke_link(link.link_id)
    with harness.client() as client:
        page = client.get(f"/s/{token}")
    assert page.status_code == 410
    assert "This link is no longer available" in page.text
    assert harness.transport.events("share.link.denied")[0]["data"]["reason"] == "revoked"


def test_a_revocation_that_overtook_its_link_still_counts(harness: Harness) -> None:
    """``share.revoked`` applied before the link's ``share.link.issued`` (separate deliveries
    can cross) still ends the link once it is known."""
    share_id = f"shr_{uuid.uuid4().hex}"
    harness.revoke(share_id)
    token, _link = harness.add_link(share_id=share_id)
    with harness.client() as client:
        assert client.get(f"/s/{token}").status_code == 410
        assert client.post(f"/s/{token}", data={"csrf": "whatever"}).status_code in (403, 410)


def test_french_link_page(harness: Harness) -> None:
    """A link sent in fr-CA has its page in French."""
    token, _link = harness.add_link(locale="fr-CA")
    with harness.client() as client:
        page = client.get(f"/s/{token}")
    text = html.unescape(page.text)
    assert '<html lang="fr">' in text
    assert "Dr. Alice Smith, de Demo Hospital, a partagé un examen d'imagerie avec vous." in text
    assert ">Voir l'examen</button>" in text
    assert page.headers["content-language"] == "fr-CA"


def test_unknown_token_page_follows_the_browser_language(harness: Harness) -> None:
    """With no link to take a language from, a French browser gets French."""
    with harness.client() as client:
        page = client.get("/s/nothing-here", headers={"accept-language": "fr-CA,fr;q=0.9"})
    assert "Ce lien ne fonctionne pas" in page.text


def test_link_page_shows_names_without_bidi_or_zero_width_characters(harness: Harness) -> None:
    """A sender and organisation stored with bidirectional overrides and zero-width
    characters are shown without them."""
    token, link = harness.add_link()

    async def rename() -> None:
        async with harness.db.transaction() as session:
            stored = await session.get(ProjectedLink, link.link_id)
            assert stored is not None
            stored.sender_name = "Dr. Alice\u202e Smith\u200b"
            stored.organisation = "\u2067Demo\u2069 Hospital\ufeff"
            session.add(stored)

    harness.run(rename())
    with harness.client() as client:
        page = client.get(f"/s/{token}")
    assert "Dr. Alice Smith at Demo Hospital shared an imaging study with you." in page.text
    for invisible in ("\u202e", "\u200b", "\u2067", "\u2069", "\ufeff"):
        assert invisible not in page.text


def test_a_trailing_slash_is_a_404_never_a_redirect_to_the_forged_host(harness: Harness) -> None:
    """GET /s/<token>/ with a forged Host answers 404 with no Location: Starlette's slash
    redirect would have sent the browser to http://evil.example/s/<token>."""
    token, _link = harness.add_link()
    with harness.client() as client:
        for path in (f"/s/{token}/", f"/s/{token}/code/", "/blume/login/", "/help/link-page/"):
            answer = client.get(path, headers={"host": "evil.example"})
            assert answer.status_code == 404, path
            assert "location" not in answer.headers, path
            assert "evil.example" not in answer.text, path


def test_unknown_token_denials_are_one_record_per_client_reason_and_minute(
    harness: Harness,
) -> None:
    """Five unknown tokens from one client in a minute: the first is recorded at once, the
    other four as one record with count 4 once the minute is over; another client's
    denial is its own first."""
    with harness.client() as client:
        for number in range(5):
            assert client.get(f"/s/{str(number) * 43}").status_code == 404
    with harness.client(ip="198.51.100.9") as other:
        other.get(f"/s/{'z' * 43}")
    first, others_first = harness.transport.events("share.link.denied")
    assert first["data"]["count"] == 1
    assert others_first["data"]["client"]["client_ip"] == "198.51.100.9"
    assert harness.run(harness.gateway.access.record_counted_denials()) == 0  # minute not over
    harness.clock.advance(seconds=60)
    assert harness.run(harness.gateway.access.record_counted_denials()) == 1
    aggregate = harness.transport.events("share.link.denied")[-1]
    assert aggregate["tenantid"] == "_unknown"
    assert aggregate["data"]["count"] == 4
    assert aggregate["data"]["reason"] == "unknown"
    assert aggregate["data"]["client"]["client_ip"] == first["data"]["client"]["client_ip"]
    assert aggregate["data"]["counted_from"]
    assert len(harness.transport.events("share.link.denied")) == 3
