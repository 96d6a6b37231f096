"""The image route, a plain Starlette route before the FastAPI ones: it still answers with
no-store and every security header, is counted by its route template, checks its query as
the FastAPI route did, and answers 410 from the moment the share is revoked."""

from __future__ import annotations

import structlog
from blume_access_gateway.security import security_headers
from blume_access_gateway.viewer_routes import FRAME_PATH
from blume_runtime.metrics import HTTP_REQUESTS

from services.access_gateway.tests.conftest import Harness
from services.access_gateway.tests.test_viewer_scope import (
    PNG,
    TENANT,
    open_recipient_viewer,
    with_study_pacs,
)


def _counted(status: str) -> float:
    return float(HTTP_REQUESTS.labels(route=FRAME_PATH, status=status)._value.get())


def test_an_image_carries_no_store_and_the_security_headers(harness: Harness) -> None:
    """A granted frame: the PACS's PNG (streamed to the proxy in pieces), Cache-Control
    no-store and each header every response gets (CSP, nosniff, no referrer...), counted
    under the route template; every answer the PACS gave is closed, so no connection is
    held after the request."""
    pacs = with_study_pacs(harness.gateway)
    before = _counted("200")
    with harness.client() as client:
        viewer, _share = open_recipient_viewer(harness, client)
        answer = client.get(f"{viewer}/series/1/frames/2")
    assert answer.status_code == 200
    assert answer.content == PNG
    assert answer.headers["content-type"] == "image/png"
    for name, value in security_headers(hsts=False).items():
        assert answer.headers[name] == value, name
    assert _counted("200") == before + 1
    assert pacs.answers
    assert all(answer.closed for answer in pacs.answers)


def test_a_revoked_share_answers_410_with_the_same_headers(harness: Harness) -> None:
    """Frames granted a moment ago (the grant kept in memory); the revocation is applied
    here: the next frame is 410, no-store, with the security headers."""
    with_study_pacs(harness.gateway)
    with harness.client() as client:
        viewer, share_id = open_recipient_viewer(harness, client)
        assert client.get(f"{viewer}/series/1/frames/1").status_code == 200
        harness.revoke(share_id, tenant=TENANT)
        gone = client.get(f"{viewer}/series/1/frames/2")
    assert gone.status_code == 410
    assert gone.headers["cache-control"] == "no-store"
    assert gone.headers["content-security-policy"].startswith("default-src 'self'")


def test_a_malformed_window_or_format_is_a_bad_request(harness: Harness) -> None:
    """A window that is not centre,width, one over 40 characters, or a format other than
    png or jpeg: 400; a well-formed window and jpeg pass."""
    with_study_pacs(harness.gateway)
    with harness.client() as client:
        viewer, _share = open_recipient_viewer(harness, client)
        frame = f"{viewer}/series/1/frames/1"
        assert client.get(frame, params={"window": "40;400"}).status_code == 400
        assert client.get(frame, params={"window": "1" * 20 + ".5," + "1" * 20}).status_code == 400
        assert client.get(frame, params={"format": "gif"}).status_code == 400
        good = client.get(frame, params={"window": "-600,1500", "format": "jpeg"})
    assert good.status_code == 200


def test_an_error_in_the_image_route_is_the_plain_500_page(harness: Harness) -> None:
    """The image route skips FastAPI's own layers, not the gateway's: a failure inside it
    is the error page with the security headers, nothing of the error, logged by route."""
    with_study_pacs(harness.gateway)

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret detail")

    with harness.client(raise_server_exceptions=False) as client:
        viewer, _share = open_recipient_viewer(harness, client)
        harness.gateway.viewer.frame = broken  # type: ignore[method-assign]
        with structlog.testing.capture_logs() as logs:
            answer = client.get(f"{viewer}/series/1/frames/1")
    assert answer.status_code == 500
    assert "Something went wrong" in answer.text
    assert "secret detail" not in answer.text + repr(logs)
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-frame-options"] == "DENY"
    assert any(entry.get("route") == FRAME_PATH for entry in logs)


def test_another_method_on_the_image_path_is_405(harness: Harness) -> None:
    """Only GET takes the image route's shortcut; a POST there goes through the whole
    application and is refused (405) with the security headers."""
    with_study_pacs(harness.gateway)
    with harness.client() as client:
        viewer, _share = open_recipient_viewer(harness, client)
        refused = client.post(f"{viewer}/series/1/frames/1")
    assert refused.status_code == 405
    assert refused.headers["content-security-policy"].startswith("default-src 'self'")
