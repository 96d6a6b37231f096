"""The built-in viewer's routes with a stand-in PACS: a tenant naming its PACS sends the
recipient to ``/view/<handle>`` (no UID in it); a study the PACS does not have, or a PACS
that does not answer, is said plainly and audited; the handle works only with its session."""

from __future__ import annotations

import re

import httpx
from blume_access_gateway.dicomweb import DicomwebClient, PacsError
from blume_access_gateway.models import ProjectedLink

from services.access_gateway.tests.conftest import Harness, csrf_for
from services.access_gateway.tests.fake_pacs import FakeAnswer, FakePacs

TENANT = "pacs-clinic"
STUDY_UID = "1.2.826.0.1.3680043.8.498.33333333333333333333"


def use_pacs(harness: Harness, status: int | None) -> list[str]:
    """Swap the PACS for a stand-in answering ``status`` (None: unreachable); the URLs
    it was asked for."""

    def answering(_url: str, _headers: object) -> FakeAnswer:
        if status is None:
            raise PacsError("ClientConnectorError")
        return FakeAnswer(status)

    pacs = FakePacs(answering)
    harness.gateway.viewer.dicomweb = DicomwebClient(pacs)
    return pacs.asked


def open_viewer(harness: Harness, client: httpx.Client) -> str:
    token, _link = harness.add_link(TENANT, study_uid=STUDY_UID)
    page = client.get(f"/s/{token}")
    pressed = client.post(f"/s/{token}", data={"csrf": csrf_for(page.text, f"/s/{token}")})
    assert pressed.status_code == 303
    location = pressed.headers["location"]
    assert re.fullmatch(r"/view/r[0-9a-f]{32}", location)
    return str(location)


def test_a_study_not_on_the_pacs_is_said_plainly_and_audited(harness: Harness) -> None:
    """QIDO-RS finds nothing: the page says so (200), and share.images.unavailable
    records it with reason not_on_pacs and no UID."""
    asked = use_pacs(harness, 204)
    with harness.client() as client:
        viewer = open_viewer(harness, client)
        page = client.get(viewer)
    assert page.status_code == 200
    assert "The images are not available" in page.text
    assert STUDY_UID not in page.text
    assert STUDY_UID in asked[0]  # the UID goes to the PACS only
    [event] = harness.transport.events("share.images.unavailable")
    assert event["data"]["reason"] == "not_on_pacs"
    assert STUDY_UID not in str(event)


def test_an_unreachable_pacs_is_said_plainly_and_audited(harness: Harness) -> None:
    """The PACS refuses the connection: the same plain page, reason pacs_unreachable."""
    use_pacs(harness, None)
    with harness.client() as client:
        page = client.get(open_viewer(harness, client))
    assert page.status_code == 200
    assert "The images are not available" in page.text
    [event] = harness.transport.events("share.images.unavailable")
    assert event["data"]["reason"] == "pacs_unreachable"


def test_the_handle_is_nothing_without_its_session_and_gone_after_revocation(
    harness: Harness,
) -> None:
    """Another browser with the same handle: 404. After share.revoked: 410 for the page
    and its frames, the PACS not asked for the frame."""
    asked = use_pacs(harness, 204)
    with harness.client() as client:
        viewer = open_viewer(harness, client)
        with harness.client() as stranger:
            assert stranger.get(viewer).status_code == 404
            assert stranger.get(f"{viewer}/series/1/frames/1").status_code == 404
        [link] = [row for row in harness.rows(ProjectedLink) if row.study_instance_uid == STUDY_UID]
        harness.revoke(link.share_id, tenant=TENANT)
        before = len(asked)
        assert client.get(viewer).status_code == 410
        assert client.get(f"{viewer}/series/1/frames/1").status_code == 410
        assert len(asked) == before
