"""The sender's side on the gateway app (TestClient, migrated SQLite, recording transport):
the launch API, the one-time launch URL, the sharing page's validation, sending, the share
API, Revoke, ``sender_auth: sso``, and what never reaches a URL or a log."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from blume_access_gateway.launches import create_launch_client
from blume_access_gateway.models import SenderLaunch
from blume_contracts.artefacts import EXAMPLES_DIR
from blume_contracts.events import ShareAccepted, ShareLinkOpened
from blume_runtime.db import utcnow

from services.access_gateway.tests.conftest import PUBLIC, Harness, make_harness
from services.access_gateway.tests.fake_idp import query_of

EXAMPLE = json.loads((EXAMPLES_DIR / "study.send.requested.json").read_text())["data"]
PHI = ("DOE^JANE", "MRN-0001", "1980-01-02", EXAMPLE["study"]["study_instance_uid"])


def launch_body(tenant: str = "open-clinic", **changes: Any) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "sender": EXAMPLE["sender"],
        "study": EXAMPLE["study"],
        "locale": "en-CA",
        **changes,
    }


def client_token(harness: Harness, tenant: str = "open-clinic") -> str:
    async def create() -> str:
        async with harness.db.transaction() as session:
            _record, token = await create_launch_client(session, tenant, "omegaai", utcnow())
            return token

    return str(harness.run(create()))


def launch(client: Any, token: str, body: dict[str, Any]) -> Any:
    return client.post("/api/v1/launches", json=body, headers={"Authorization": f"Bearer {token}"})


def open_page(harness: Harness, client: Any, tenant: str = "open-clinic", **changes: Any) -> Any:
    """Launch, redeem the URL, follow to the sharing page; the page's response."""
    created = launch(client, client_token(harness, tenant), launch_body(tenant, **changes))
    assert created.status_code == 201, created.text
    redeemed = client.get(created.json()["launch_url"].removeprefix(PUBLIC))
    assert redeemed.status_code == 303
    assert redeemed.headers["location"] == "/send"
    return client.get("/send")


def csrf_of(page: Any) -> str:
    text = page.text
    marker = 'name="csrf" value="'
    start = text.index(marker) + len(marker)
    return text[start : text.index('"', start)]


def send(client: Any, page: Any, **fields: str) -> Any:
    form = {
        "method": "external_link",
        "recipient_name": "Dr. Bob Jones",
        "recipient_email": "bob.jones@clinic.example",
        "message": "",
        "expires_in_hours": "24",
        "csrf": csrf_of(page),
        **fields,
    }
    return client.post("/send", data=form)


def test_a_launch_is_created_redeemed_once_and_prefilled(harness: Harness) -> None:
    """201 with a /share/<id> URL of at least 128 random bits and a 5-minute expiry; the
    GET sets a Lax, HttpOnly, host-only sender cookie and 303s to the prefilled page (PHI
    on the page, not in its title); the second GET is 410 with what to do; unknown ids 404."""
    with harness.client() as client:
        token = client_token(harness)
        created = launch(client, token, launch_body())
        assert created.status_code == 201
        url = created.json()["launch_url"]
        assert url.startswith(f"{PUBLIC}/share/")
        assert len(urlsplit(url).path.removeprefix("/share/")) >= 22  # >= 128 bits, base64
        assert not any(value in url for value in PHI)
        redeemed = client.get(url.removeprefix(PUBLIC))
        assert redeemed.status_code == 303
        cookie = redeemed.headers["set-cookie"]
        assert "__Host-blume_sender=" in cookie
        for attribute in ("HttpOnly", "Secure", "SameSite=lax", "Path=/"):
            assert attribute.lower() in cookie.lower()
        assert "domain=" not in cookie.lower()
        page = client.get("/send")
        assert page.status_code == 200
        assert "DOE^JANE" in page.text
        assert "MRN-0001" in page.text
        assert "Dr. Alice Smith" in page.text
        title = page.text[page.text.index("<title>") : page.text.index("</title>")]
        assert not any(value in title for value in PHI)
        for name in ("method", "recipient_name", "recipient_email", "message", "expires_in_hours"):
            assert f'name="{name}"' in page.text
        again = client.get(url.removeprefix(PUBLIC))
        assert again.status_code == 410
        assert "already used" in again.text
        assert client.get("/share/not-a-launch-id-at-all-xxxx").status_code == 404
    [stored] = harness.rows(SenderLaunch)
    assert urlsplit(url).path.removeprefix("/share/") not in json.dumps(
        stored.model_dump(), default=str
    )
    assert stored.sealed_request is not None
    assert "DOE^JANE" not in stored.sealed_request


def test_an_expired_launch_is_410(harness: Harness) -> None:
    """Past its five minutes the launch URL answers 410 and says to launch again."""
    with harness.client() as client:
        created = launch(client, client_token(harness), launch_body())
        harness.clock.advance(minutes=6)
        expired = client.get(created.json()["launch_url"].removeprefix(PUBLIC))
    assert expired.status_code == 410
    assert "expired" in expired.text


def test_unknown_and_other_tenant_tokens(harness: Harness) -> None:
    """No token or an unknown one: 401; a token of another tenant: 403 naming tenant_id."""
    with harness.client() as client:
        assert client.post("/api/v1/launches", json=launch_body()).status_code == 401
        assert launch(client, "lc_unknown", launch_body()).status_code == 401
        other = launch(client, client_token(harness, "otp-hospital"), launch_body())
    assert other.status_code == 403
    assert other.json()["detail"][0]["loc"] == ["body", "tenant_id"]


def test_a_bad_body_is_422_with_field_names_and_no_values_anywhere(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """422 lists the fields (sender.email, study.patient.mrn, locale) with no value, and no
    value appears in the logs either."""
    study = json.loads(json.dumps(EXAMPLE["study"]))
    study["patient"]["mrn"] = "MRN 0001 SECRET-PHI"
    body = launch_body(
        sender={**EXAMPLE["sender"], "email": "SECRET-PHI-not-an-address"},
        study=study,
        locale="SECRET-PHI-xx",
    )
    caplog.set_level(logging.DEBUG)
    with harness.client() as client:
        answer = launch(client, client_token(harness), body)
    assert answer.status_code == 422
    fields = {".".join(map(str, d["loc"][1:])) for d in answer.json()["detail"]}
    assert fields == {"sender.email", "study.patient.mrn", "locale"}
    assert "SECRET-PHI" not in answer.text
    assert "SECRET-PHI" not in caplog.text


def test_sending_emits_the_request_with_the_sender_from_the_session(harness: Harness) -> None:
    """Send to External User emits study.send.requested with the launch's sender and study
    (a sender field in the form is ignored), drops the sealed body, and shows the status."""
    with harness.client() as client:
        page = open_page(harness, client)
        sent = send(client, page, sender="mallory@evil.example")
        assert sent.status_code == 303
        [event] = harness.transport.events("study.send.requested")
        assert event["data"]["sender"] == EXAMPLE["sender"]
        assert event["data"]["recipient"]["email"] == "bob.jones@clinic.example"
        assert event["data"]["expires_in_hours"] == 24
        assert event["source"] == "/blume-share/access_gateway"
        share_id = sent.headers["location"].rsplit("/", 1)[1]
        status = client.get(sent.headers["location"])
        assert status.status_code == 200
        assert "Not opened yet" in status.text
    [stored] = harness.rows(SenderLaunch)
    assert stored.sealed_request is None
    assert share_id.startswith("shr_")


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"recipient_email": "not-an-address"}, "recipient_email", "valid email address"),
        ({"expires_in_hours": "720"}, "expires_in_hours", "at most 168 hours"),
        ({"recipient_name": ""}, "recipient_name", "recipient&#39;s name"),
        ({"message": "x" * 2001}, "message", "too long"),
    ],
)
def test_the_page_refuses_what_the_dispatcher_would(
    harness: Harness, fields: dict[str, str], field: str, text: str
) -> None:
    """Invalid email, expiry over the tenant's cap, no name, too long a message: 422, the
    form again with the error under its field, nothing emitted."""
    with harness.client() as client:
        page = open_page(harness, client)
        refused = send(client, page, **fields)
    assert refused.status_code == 422
    assert f'id="{field}-error"' in refused.text
    assert text in refused.text
    assert harness.transport.events("study.send.requested") == []


def test_a_missing_csrf_token_sends_nothing(harness: Harness) -> None:
    """Without its CSRF token the form is refused with 403 and nothing is emitted."""
    with harness.client() as client:
        page = open_page(harness, client)
        refused = send(client, page, csrf="")
    assert refused.status_code == 403
    assert harness.transport.events("study.send.requested") == []


@pytest.mark.parametrize(
    ("account", "readiness"),
    [
        ({"active": True}, "enrolled"),
        ({"withhold_portal": True}, "withheld"),
        (None, "not_enrolled"),
    ],
)
def test_blume_readiness_is_shown_and_only_enrolled_patients_are_sent(
    harness: Harness, account: dict[str, bool] | None, readiness: str
) -> None:
    """The page shows enrolled / withheld / not enrolled from the account projection and
    sends a Blume share only for an enrolled patient."""
    if account is not None:
        harness.add_patient("bp-0001", **account)
    with harness.client() as client:
        page = open_page(harness, client, patient_account={"blume_patient_id": "bp-0001"})
        assert f'data-readiness="{readiness}"' in page.text
        sent = send(client, page, method="blume")
    if readiness == "enrolled":
        assert sent.status_code == 303
        [event] = harness.transport.events("study.send.requested")
        assert event["data"]["patient_account"] == {"blume_patient_id": "bp-0001"}
    else:
        assert sent.status_code == 422
        assert harness.transport.events("study.send.requested") == []


def test_share_api_and_revoke(harness: Harness) -> None:
    """GET /api/v1/shares/{id} gives the state and counts (no PHI) to the same tenant's
    client only; POST .../revoke emits share.revoke.requested."""
    with harness.client() as client:
        page = open_page(harness, client)
        share_id = send(client, page).headers["location"].rsplit("/", 1)[1]
        accepted = ShareAccepted(share_id=share_id, method="external_link", expires_at=None)
        harness.feed_status("share.accepted", accepted, tenant="open-clinic")
        opened = ShareLinkOpened(
            share_id=share_id,
            link_id="lnk_" + "a" * 32,
            client={"client_ip": "203.0.113.9", "user_agent": "x"},  # type: ignore[arg-type]
        )
        harness.feed_status("share.link.opened", opened, tenant="open-clinic")
        token = client_token(harness)
        headers = {"Authorization": f"Bearer {token}"}
        found = client.get(f"/api/v1/shares/{share_id}", headers=headers)
        assert found.status_code == 200
        assert found.json()["state"] == "accepted"
        assert found.json()["opened_count"] == 1
        assert not any(value in found.text for value in PHI)
        other = {"Authorization": f"Bearer {client_token(harness, 'otp-hospital')}"}
        assert client.get(f"/api/v1/shares/{share_id}", headers=other).status_code == 404
        revoked = client.post(f"/api/v1/shares/{share_id}/revoke", headers=headers)
    assert revoked.status_code == 202
    [request] = harness.transport.events("share.revoke.requested")
    assert request["data"]["share_id"] == share_id


def test_staff_sign_in_must_be_the_launchs_sender(harness: Harness) -> None:
    """sender_auth sso: the launch goes to the staff provider; signing in as someone else
    is refused (403) and the page stays closed; as the sender, the page opens."""
    for email, expected in (
        ("mallory@demo-hospital.example", 403),
        (EXAMPLE["sender"]["email"], 303),
    ):
        with harness.client() as client:
            created = launch(
                client,
                client_token(harness, "staff-sso-hospital"),
                launch_body("staff-sso-hospital"),
            )
            to_provider = client.get(created.json()["launch_url"].removeprefix(PUBLIC))
            assert to_provider.status_code == 303
            back = harness.idp.authorize(query_of(to_provider.headers["location"]), email)
            answer = client.get(back.removeprefix(PUBLIC))
            assert answer.status_code == expected
            page = client.get("/send")
            assert page.status_code == (403 if expected == 403 else 200)


def test_the_sweep_drops_sealed_study_data_when_due(harness: Harness) -> None:
    """An unredeemed launch past its 5 minutes and a session past its 30 minutes lose their
    sealed study data at the next sweep; a live session keeps it."""
    with harness.client() as client:
        token = client_token(harness)
        launch(client, token, launch_body())  # never redeemed
        open_page(harness, client)  # redeemed: a session
        harness.clock.advance(minutes=6)
        assert harness.run(harness.gateway.launches.sweep()) == 1
        kept = [row for row in harness.rows(SenderLaunch) if row.sealed_request is not None]
        assert len(kept) == 1
        harness.clock.advance(minutes=30)
        assert harness.run(harness.gateway.launches.sweep()) == 1
        assert client.get("/send").status_code == 403
    assert all(row.sealed_request is None for row in harness.rows(SenderLaunch))


def test_the_launch_api_is_rate_limited_per_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over BLUME_RATE_LIMIT_PER_LAUNCH_CLIENT a client gets 429 with Retry-After; another
    client of the same tenant is not held back by it."""
    for harness in make_harness(tmp_path, monkeypatch, rate_limit_per_launch_client="2/minute"):
        with harness.client() as client:
            busy, other = client_token(harness), client_token(harness)
            answers = [launch(client, busy, launch_body()).status_code for _ in range(3)]
            assert answers == [201, 201, 429]
            refused = launch(client, busy, launch_body())
            assert int(refused.headers["retry-after"]) >= 1
            assert launch(client, other, launch_body()).status_code == 201
