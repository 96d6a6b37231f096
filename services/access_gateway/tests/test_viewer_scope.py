"""The viewer's scope with a stand-in PACS that has the study: a probe of a handle that is
not one's own is refused (404) and audited, a BALP Read is recorded once per session and
series even when two gateway replicas serve it, and a grant reused from memory never
outlives a revocation by more than ``GRANT_CACHE_SECONDS``."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

import pytest
from blume_access_gateway.app import create_app
from blume_access_gateway.dicomweb import DicomwebClient
from blume_access_gateway.gateway import Gateway
from blume_access_gateway.viewer import GRANT_CACHE_SECONDS
from blume_runtime.outbox import OutboxRelay
from fastapi.testclient import TestClient
from yarl import URL

from services.access_gateway.tests.conftest import (
    PUBLIC,
    Harness,
    SettableFreshness,
    csrf_for,
)
from services.access_gateway.tests.fake_pacs import FakeAnswer, FakePacs
from services.access_gateway.tests.test_blume_deep_link import sign_in_patient

TENANT = "pacs-clinic"
STUDY_UID = "1.2.826.0.1.3680043.8.498.44444444444444444444"
SERIES_UID = f"{STUDY_UID}.1"
IMAGES = 3
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _study_pacs(url: str, _headers: Mapping[str, str]) -> FakeAnswer:
    """QIDO-RS, WADO-RS metadata and rendered, for one study of one three-image series."""
    path = URL(url).path
    dicom_json = {"content-type": "application/dicom+json"}
    if path.endswith("/rendered"):
        # Streamed in pieces, as the PACS answers: the proxy passes it on as it comes.
        return FakeAnswer(200, PNG, {"content-type": "image/png"})
    if path.endswith("/metadata"):
        body: list[dict[str, Any]] = [
            {"00080018": {"Value": [f"{SERIES_UID}.{n}"]}, "00200013": {"Value": [n]}}
            for n in range(1, IMAGES + 1)
        ]
    elif path.endswith("/series"):
        body = [
            {
                "0020000E": {"Value": [SERIES_UID]},
                "00200011": {"Value": [1]},
                "00080060": {"Value": ["CT"]},
                "00201209": {"Value": [IMAGES]},
            }
        ]
    else:
        body = [{"00080020": {"Value": ["20261120"]}, "00080061": {"Value": ["CT"]}}]
    return FakeAnswer(200, json.dumps(body).encode(), dicom_json)


def with_study_pacs(gateway: Gateway) -> FakePacs:
    pacs = FakePacs(_study_pacs)
    gateway.viewer.dicomweb = DicomwebClient(pacs)
    return pacs


def open_recipient_viewer(harness: Harness, client: TestClient) -> tuple[str, str]:
    """A link to the study, opened and View study pressed: the viewer's path, the share."""
    token, link = harness.add_link(TENANT, study_uid=STUDY_UID)
    page = client.get(f"/s/{token}")
    pressed = client.post(f"/s/{token}", data={"csrf": csrf_for(page.text, f"/s/{token}")})
    assert pressed.status_code == 303
    assert re.fullmatch(r"/view/r[0-9a-f]{32}", pressed.headers["location"])
    return str(pressed.headers["location"]), link.share_id


@pytest.fixture
def replica(harness: Harness) -> Iterator[Gateway]:
    """A second gateway on the same database, with projections of its own (freshness):
    another replica, which hears of no event this process applies."""
    gateway = Gateway.build(
        harness.gateway.settings,
        harness.db,
        OutboxRelay(harness.db, harness.transport),
        SettableFreshness(),
        config=harness.gateway.config,
        clock=harness.clock,
    )
    with_study_pacs(gateway)
    yield gateway
    harness.run(gateway.close())


def test_a_patient_probing_another_patients_images_gets_404_and_is_audited(
    harness: Harness,
) -> None:
    """Signed in as bp-0001, the viewer page and a frame of bp-0002's entry: 404 both, and
    share.blume.denied names the prober and the entry asked for (the second probe of the
    minute only counted)."""
    with_study_pacs(harness.gateway)
    harness.add_patient("bp-0001", tenant=TENANT)
    harness.add_patient("bp-0002", tenant=TENANT)
    own = harness.add_entry("bp-0001", tenant=TENANT)
    other = harness.add_entry("bp-0002", tenant=TENANT)
    theirs = f"/view/{harness.gateway.viewer.patient_handle(other.entry_id, 'bp-0002')}"
    with harness.client() as client:
        sign_in_patient(harness, client, f"/blume/studies/{own.entry_id}", "bp-0001")
        assert client.get(theirs).status_code == 404
        assert client.get(f"{theirs}/series/1/frames/1").status_code == 404
    [denied] = harness.transport.events("share.blume.denied")
    assert denied["data"]["entry_id"] == other.entry_id
    assert denied["data"]["blume_patient_id"] == "bp-0001"
    assert harness.transport.events("share.images.viewed") == []


def test_a_recipient_probing_a_handle_not_theirs_gets_404_and_is_audited(
    harness: Harness,
) -> None:
    """With a live access session, a made-up handle: 404, and share.link.denied (unknown,
    naming no link) records the probe."""
    with_study_pacs(harness.gateway)
    with harness.client() as client:
        viewer, _share = open_recipient_viewer(harness, client)
        assert client.get(f"{viewer}/series/1/frames/1").status_code == 200
        made_up = "/view/r" + "0" * 32
        assert client.get(f"{made_up}/series/1/frames/1").status_code == 404
    [denied] = harness.transport.events("share.link.denied")
    assert denied["data"]["reason"] == "unknown"
    assert denied["data"]["link_id"] is None


def test_two_replicas_record_one_read_per_session_and_series(
    harness: Harness, replica: Gateway
) -> None:
    """The same session's frames of series 1 served by this gateway and by a replica on
    the same database: one share.images.viewed between them."""
    with_study_pacs(harness.gateway)
    with harness.client() as client:
        viewer, share_id = open_recipient_viewer(harness, client)
        with TestClient(
            create_app(replica), base_url=PUBLIC, cookies=client.cookies, follow_redirects=False
        ) as other:
            for image in range(1, IMAGES + 1):
                assert client.get(f"{viewer}/series/1/frames/{image}").status_code == 200
                assert other.get(f"{viewer}/series/1/frames/{image}").status_code == 200
    [viewed] = harness.transport.events("share.images.viewed")
    assert viewed["data"]["share_id"] == share_id
    assert viewed["data"]["series_number"] == 1


def test_a_revocation_applied_by_another_replica_bites_within_the_grant_cache(
    harness: Harness, replica: Gateway
) -> None:
    """The replica granted a frame moments ago; the revocation is applied by this
    process, not the replica: past GRANT_CACHE_SECONDS (well under 1 s) the replica's next
    frame answers 410."""
    assert GRANT_CACHE_SECONDS <= 0.25
    with harness.client() as client:
        viewer, share_id = open_recipient_viewer(harness, client)
        with TestClient(
            create_app(replica), base_url=PUBLIC, cookies=client.cookies, follow_redirects=False
        ) as other:
            assert other.get(f"{viewer}/series/1/frames/1").status_code == 200
            harness.revoke(share_id, tenant=TENANT)
            time.sleep(GRANT_CACHE_SECONDS + 0.05)
            assert other.get(f"{viewer}/series/1/frames/2").status_code == 410
            assert client.get(f"{viewer}/series/1/frames/2").status_code == 410


def test_a_sign_out_ends_the_viewers_reused_grant_at_once(harness: Harness) -> None:
    """A frame was granted moments ago (the grant is kept in memory); the recipient signs
    out with the viewer page's own button, and the access cookie copied before it asks for
    the next frame at once: refused, without waiting out GRANT_CACHE_SECONDS."""
    with_study_pacs(harness.gateway)
    token, _link = harness.add_link(TENANT, study_uid=STUDY_UID)
    with harness.client() as client:
        page = client.get(f"/s/{token}")
        pressed = client.post(f"/s/{token}", data={"csrf": csrf_for(page.text, f"/s/{token}")})
        viewer = pressed.headers["location"]
        assert client.get(f"{viewer}/series/1/frames/1").status_code == 200
        copied = {name: value for name, value in client.cookies.items() if "csrf" not in name}
        viewer_page = client.get(viewer).text  # signed in: it offers the sign-out button
        signed_out = client.post("/sign-out", data={"csrf": csrf_for(viewer_page, "/sign-out")})
        assert signed_out.status_code == 303
    with harness.client(cookies=copied) as thief:
        assert thief.get(f"{viewer}/series/1/frames/2").status_code == 404


def test_a_link_that_expires_while_its_session_lives_answers_410(harness: Harness) -> None:
    """A link that ends ten minutes from now, its access session thirty: frames are served
    until the link's end, and the first frame after it answers 410 (gone), not 404, with
    the session still live."""
    with_study_pacs(harness.gateway)
    token, _link = harness.add_link(TENANT, study_uid=STUDY_UID, expires_in=timedelta(minutes=10))
    with harness.client() as client:
        page = client.get(f"/s/{token}")
        pressed = client.post(f"/s/{token}", data={"csrf": csrf_for(page.text, f"/s/{token}")})
        viewer = pressed.headers["location"]
        assert client.get(f"{viewer}/series/1/frames/1").status_code == 200
        harness.clock.advance(minutes=9)
        assert client.get(f"{viewer}/series/1/frames/2").status_code == 200
        harness.clock.advance(minutes=2)
        assert client.get(f"{viewer}/series/1/frames/3").status_code == 410
