"""The Orthanc-authorization endpoint, called as Orthanc's advanced authorization plugin
calls its web service (``POST`` of the plugin's token-validation JSON): granted only for
a GET of the share's own study with a ticket the gateway issued, while the share is usable;
``validity`` never over 1 s. And a tenant with an external viewer gets its recipients sent
there with a ticket. The plugin authenticates with the basic credentials configured as its
``WebServiceUsername``/``WebServicePassword``: without them, 401."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from services.access_gateway.tests.conftest import Harness, csrf_for, make_harness

TENANT = "external-viewer-clinic"
STUDY_UID = "1.2.826.0.1.3680043.8.498.11111111111111111111"
OTHER_UID = "1.2.826.0.1.3680043.8.498.22222222222222222222"
ROUTE = "/api/v1/orthanc/tokens/validate"
PLUGIN = ("orthanc-plugin", "plugin-password-from-a-secret")
"""What the plugin's WebServiceUsername and WebServicePassword are set to."""


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """The gateway with the plugin's credentials configured (the password as an
    environment variable would give it)."""
    yield from make_harness(
        tmp_path, monkeypatch, orthanc_auth_username=PLUGIN[0], orthanc_auth_password=PLUGIN[1]
    )


def ticket_for(harness: Harness, client: Any) -> tuple[str, str]:
    """Open the link and press View study; the ticket from the external viewer redirect."""
    token, link = harness.add_link(TENANT, study_uid=STUDY_UID)
    page = client.get(f"/s/{token}")
    pressed = client.post(f"/s/{token}", data={"csrf": csrf_for(page.text, f"/s/{token}")})
    assert pressed.status_code == 303
    location = urlsplit(pressed.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "https://ohif.test/viewer"
    query = parse_qs(location.query)
    assert query["site"] == ["2"]
    return query["ticket"][0], link.share_id


def plugin_question(ticket: str, **changes: Any) -> dict[str, Any]:
    """What the plugin POSTs for a request carrying ``?ticket=`` (TokenGetArguments)."""
    return {
        "dicom-uid": STUDY_UID,
        "orthanc-id": "6e5e8a1c-1ab2c3d4-5e6f7a8b-9c0d1e2f-3a4b5c6d",
        "level": "study",
        "method": "get",
        "token-key": "ticket",
        "token-value": ticket,
        "server-id": "site-orthanc",
        **changes,
    }


def test_external_viewer_ticket_is_granted_for_its_study_with_one_second_validity(
    harness: Harness,
) -> None:
    """The share's own study, GET, a fresh ticket: granted, validity 1, not cacheable."""
    with harness.client() as client:
        ticket, _share = ticket_for(harness, client)
        answer = client.post(ROUTE, json=plugin_question(ticket), auth=PLUGIN)
    assert answer.status_code == 200
    assert answer.json() == {"granted": True, "validity": 1}
    assert answer.headers["cache-control"] == "no-store"


def test_anything_but_a_get_of_the_shared_study_is_refused(harness: Harness) -> None:
    """Another study, a series or instance level asked directly, a write, a forged or
    missing ticket: not granted (still validity 1)."""
    with harness.client() as client:
        ticket, _share = ticket_for(harness, client)
        refused = [
            plugin_question(ticket, **{"dicom-uid": OTHER_UID}),
            plugin_question(ticket, level="instance"),
            plugin_question(ticket, level="system", **{"dicom-uid": None}),
            plugin_question(ticket, method="delete"),
            plugin_question(ticket[:-4] + "AAAA"),
            plugin_question("not-a-ticket"),
            plugin_question(ticket, **{"token-value": None}),
        ]
        for question in refused:
            answer = client.post(ROUTE, json=question, auth=PLUGIN)
            assert answer.json() == {"granted": False, "validity": 1}, question


def test_revocation_ends_the_grant_at_the_next_question(harness: Harness) -> None:
    """After share.revoked reaches the projection, the same ticket is no longer granted:
    with validity 1 the plugin's cache outlives the revocation by at most a second."""
    with harness.client() as client:
        ticket, share_id = ticket_for(harness, client)
        assert (
            client.post(ROUTE, json=plugin_question(ticket), auth=PLUGIN).json()["granted"] is True
        )
        harness.revoke(share_id, tenant=TENANT)
        answer = client.post(ROUTE, json=plugin_question(ticket), auth=PLUGIN)
    assert answer.json() == {"granted": False, "validity": 1}


def test_a_ticket_is_honoured_for_the_access_session_only(harness: Harness) -> None:
    """Past the 60 s a ticket takes to reach the viewer the external viewer keeps working,
    but not beyond the access session's 30 minutes from the ticket's issue."""
    with harness.client() as client:
        ticket, _share = ticket_for(harness, client)
        harness.clock.advance(minutes=29)
        assert (
            client.post(ROUTE, json=plugin_question(ticket), auth=PLUGIN).json()["granted"] is True
        )
        harness.clock.advance(minutes=2)
        assert (
            client.post(ROUTE, json=plugin_question(ticket), auth=PLUGIN).json()["granted"] is False
        )


def test_a_malformed_question_is_a_422_naming_fields_not_values(harness: Harness) -> None:
    """A body that is not the plugin's shape: 422 or the error page, never a grant or a 500."""
    with harness.client() as client:
        answer = client.post(ROUTE, json={"level": "galaxy", "method": "get"}, auth=PLUGIN)
    assert answer.status_code in (400, 422)
    assert "galaxy" not in answer.text


def test_a_call_without_the_plugins_credentials_is_refused_401(harness: Harness) -> None:
    """No credentials, the wrong password, another user, a bearer token: 401 with a basic
    challenge, and no grant in the body, even for a valid ticket."""
    with harness.client() as client:
        ticket, _share = ticket_for(harness, client)
        question = plugin_question(ticket)
        answers = [
            client.post(ROUTE, json=question),
            client.post(ROUTE, json=question, auth=(PLUGIN[0], "wrong")),
            client.post(ROUTE, json=question, auth=("someone-else", PLUGIN[1])),
            client.post(ROUTE, json=question, headers={"Authorization": f"Bearer {PLUGIN[1]}"}),
            client.post(ROUTE, json={"level": "galaxy"}),
        ]
        granted = client.post(ROUTE, json=question, auth=PLUGIN)
    for answer in answers:
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Basic ")
        assert "granted" not in answer.text
    assert granted.json() == {"granted": True, "validity": 1}


def test_the_password_may_come_from_a_mounted_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BLUME_ORTHANC_AUTH_PASSWORD_FILE (a Kubernetes secret volume, say): its content,
    trimmed, is the password."""
    secret = tmp_path / "orthanc-auth-password"
    secret.write_text(f"{PLUGIN[1]}\n")
    for mounted in make_harness(
        tmp_path, monkeypatch, orthanc_auth_username=PLUGIN[0], orthanc_auth_password_file=secret
    ):
        with mounted.client() as client:
            ticket, _share = ticket_for(mounted, client)
            assert client.post(ROUTE, json=plugin_question(ticket)).status_code == 401
            answer = client.post(ROUTE, json=plugin_question(ticket), auth=PLUGIN)
        assert answer.json() == {"granted": True, "validity": 1}


def test_with_no_credentials_configured_every_call_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway whose plugin credentials are not set does not answer the plugin at all:
    401, whatever is presented."""
    for unconfigured in make_harness(tmp_path, monkeypatch):
        with unconfigured.client() as client:
            ticket, _share = ticket_for(unconfigured, client)
            bare = client.post(ROUTE, json=plugin_question(ticket))
            guessed = client.post(ROUTE, json=plugin_question(ticket), auth=PLUGIN)
        assert (bare.status_code, guessed.status_code) == (401, 401)
