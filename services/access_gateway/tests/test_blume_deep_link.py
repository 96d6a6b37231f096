"""GET /blume/studies/{entry_id}: the owner, signed in, sees the study; someone not signed in
is sent to the portal's sign-in and brought back (to a same-origin path only); anyone else
gets 404. Each view is audited (share.blume.viewed)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from services.access_gateway.tests.conftest import CLIENT_IP, PORTAL_ISSUER, PUBLIC, Harness
from services.access_gateway.tests.fake_idp import query_of


def sign_in_patient(harness: Harness, client: Any, path: str, patient: str) -> Any:
    """Open ``path`` signed out, sign in at the portal's provider as ``patient``, come back."""
    to_login = client.get(path)
    assert to_login.status_code == 303
    to_provider = client.get(to_login.headers["location"])
    assert to_provider.headers["location"].startswith(f"{PORTAL_ISSUER}/authorize?")
    back = harness.portal_idp.authorize(
        query_of(to_provider.headers["location"]),
        f"{patient}@patients.example",
        {"blume_patient_id": patient},
    )
    return client.get(back.removeprefix(PUBLIC))


def test_a_signed_out_patient_is_sent_to_sign_in_and_back_to_the_study(harness: Harness) -> None:
    """Signed out: to /blume/login with the study as the return path, then back to it."""
    harness.add_patient("bp-0001")
    entry = harness.add_entry("bp-0001")
    path = f"/blume/studies/{entry.entry_id}"
    with harness.client() as client:
        to_login = client.get(path)
        assert (
            to_login.headers["location"]
            == f"/blume/login?next=%2Fblume%2Fstudies%2F{entry.entry_id}"
        )
        returned = sign_in_patient(harness, client, path, "bp-0001")
        assert returned.status_code == 303
        assert returned.headers["location"] == path
        study = client.get(path)
    assert study.status_code == 200
    assert "Your imaging study" in study.text
    assert "CT CHEST W CONTRAST" in study.text
    assert "Shared by Open Clinic" in study.text


def test_each_view_is_audited(harness: Harness) -> None:
    """share.blume.viewed with the entry, the patient and the client, in the entry's tenant."""
    harness.add_patient("bp-0001")
    entry = harness.add_entry("bp-0001")
    path = f"/blume/studies/{entry.entry_id}"
    with harness.client() as client:
        sign_in_patient(harness, client, path, "bp-0001")
        client.get(path)
        client.get(path)
    viewed = harness.transport.events("share.blume.viewed")
    assert len(viewed) == 2
    assert viewed[0]["tenantid"] == "open-clinic"
    assert viewed[0]["data"]["entry_id"] == entry.entry_id
    assert viewed[0]["data"]["share_id"] == entry.share_id
    assert viewed[0]["data"]["blume_patient_id"] == "bp-0001"
    assert viewed[0]["data"]["client"]["client_ip"] == CLIENT_IP


@pytest.mark.parametrize(
    "case",
    [
        "another patient's",
        "hidden",
        "revoked share",
        "no such entry",
        "inactive account",
        "withheld",
    ],
)
def test_anything_but_the_owners_visible_entry_is_404(harness: Harness, case: str) -> None:
    """Someone else's entry, a hidden or revoked one, a missing one, an inactive or withholding
    account: all the same 404, and no view is recorded."""
    harness.add_patient("bp-0001")
    harness.add_patient(
        "bp-0002",
        active=case != "inactive account",
        withhold_portal=case == "withheld",
    )
    owner = "bp-0001" if case == "another patient's" else "bp-0002"
    entry = harness.add_entry(owner, revoked=case in ("hidden", "revoked share"))
    entry_id = "ent_" + "0" * 32 if case == "no such entry" else entry.entry_id
    with harness.client() as client:
        sign_in_patient(harness, client, "/blume/", "bp-0002")
        response = client.get(f"/blume/studies/{entry_id}")
    assert response.status_code == 404
    assert "Study not found" in response.text
    assert harness.transport.events("share.blume.viewed") == []


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/blume/",
        "/\\evil.example",
        "/blume/../../evil",
        "/blume//evil.example",
        "javascript:alert(1)",
        "/blume/%2F%2Fevil.example",
        "/elsewhere",
    ],
)
def test_the_return_target_cannot_leave_the_portal(harness: Harness, target: str) -> None:
    """Whatever ?next= says, sign-in returns to a path on this portal (no open redirect)."""
    harness.add_patient("bp-0001")
    with harness.client() as client:
        to_provider = client.get("/blume/login", params={"next": target})
        back = harness.portal_idp.authorize(
            query_of(to_provider.headers["location"]),
            "p@patients.example",
            {"blume_patient_id": "bp-0001"},
        )
        returned = client.get(back.removeprefix(PUBLIC))
    location = returned.headers["location"]
    assert location == "/blume/"
    assert not urlsplit(location).netloc


def test_portal_sign_in_uses_pkce_and_a_lax_state_cookie(harness: Harness) -> None:
    """The patient's round trip is a code flow with S256 PKCE, like the recipient's."""
    with harness.client() as client:
        to_provider = client.get("/blume/login?next=/blume/")
    query = parse_qs(urlsplit(to_provider.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"] == [f"{PUBLIC}/blume/auth/callback"]
    assert "SameSite=lax" in to_provider.headers["set-cookie"]


def test_a_forged_portal_callback_signs_nobody_in(harness: Harness) -> None:
    """A callback with a state that is not this browser's: no patient session."""
    with harness.client() as client:
        to_provider = client.get("/blume/login?next=/blume/")
        params = {**query_of(to_provider.headers["location"]), "state": "forged"}
        back = harness.portal_idp.authorize(
            params, "p@patients.example", {"blume_patient_id": "bp-0001"}
        )
        refused = client.get(back.removeprefix(PUBLIC))
        assert refused.status_code == 403
        assert client.get("/blume/").status_code == 303  # still signed out


def test_without_a_portal_provider_sign_in_is_unavailable(harness: Harness) -> None:
    """No BLUME_PORTAL_OIDC_*: the login page says sign-in is not available (503)."""
    harness.gateway.config.portal_oidc_issuer = None
    with harness.client() as client:
        response = client.get("/blume/login?next=/blume/")
    assert response.status_code == 503
    assert "Sign-in is not available" in response.text


@pytest.mark.parametrize("case", ["another patient's", "no such entry", "malformed id"])
def test_item_12_cross_patient_probes_are_audited_as_denials(harness: Harness, case: str) -> None:
    """Issue 12 item 12: a signed-in patient probing another patient's entry, an unknown one
    or a malformed id gets the same 404 and a share.blume.denied record naming the patient
    and the client, never the other patient's entry's tenant."""
    harness.add_patient("bp-0001")
    harness.add_patient("bp-0002")
    entry = harness.add_entry("bp-0001")
    entry_id = {
        "another patient's": entry.entry_id,
        "no such entry": "ent_" + "0" * 32,
        "malformed id": "not-an-entry",
    }[case]
    with harness.client() as client:
        sign_in_patient(harness, client, "/blume/", "bp-0002")
        response = client.get(f"/blume/studies/{entry_id}")
    assert response.status_code == 404
    [denied] = harness.transport.events("share.blume.denied")
    assert denied["tenantid"] == "_unknown"
    assert denied["data"]["blume_patient_id"] == "bp-0002"
    assert denied["data"]["entry_id"] == (None if case == "malformed id" else entry_id)
    assert denied["data"]["client"]["client_ip"] == CLIENT_IP
    assert denied["data"]["count"] == 1


def test_item_12_a_probe_flood_is_one_record_per_client_patient_and_minute(
    harness: Harness,
) -> None:
    """Issue 12 item 12: twenty probes in a minute write the first denial at once and the
    other nineteen as one counted record once the minute is over, not a record each."""
    harness.add_patient("bp-0002")
    with harness.client() as client:
        sign_in_patient(harness, client, "/blume/", "bp-0002")
        for number in range(20):
            assert client.get(f"/blume/studies/ent_{number:032x}").status_code == 404
    assert len(harness.transport.events("share.blume.denied")) == 1
    assert harness.run(harness.gateway.record_counted_denials()) == 0  # minute not over
    harness.clock.advance(seconds=60)
    assert harness.run(harness.gateway.record_counted_denials()) == 1
    aggregate = harness.transport.events("share.blume.denied")[-1]
    assert aggregate["data"]["count"] == 19
    assert aggregate["data"]["blume_patient_id"] == "bp-0002"
    assert aggregate["data"]["counted_from"] is not None
