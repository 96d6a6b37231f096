"""The image proxy's rate limit is per viewing session (handle), high enough to scroll a
300-image series at full speed, and the link page's per-address limit does not apply."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.access_gateway.tests.conftest import Harness, make_harness


@pytest.fixture
def strict_harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """Per-address limit 10/minute, as strict as a link page's could be."""
    yield from make_harness(tmp_path, monkeypatch, rate_limit_per_ip="10/minute")


def test_scrolling_300_images_is_not_limited_by_the_address_limit(
    strict_harness: Harness,
) -> None:
    """300 frame requests from one address in a burst: none is refused for the rate (each
    is a 404 here: the handle is no session's), though the address limit is 10/minute."""
    handle = f"r{secrets.token_hex(16)}"
    with strict_harness.client() as client:
        statuses = {
            client.get(f"/view/{handle}/series/1/frames/{k}").status_code for k in range(1, 301)
        }
    assert statuses == {404}


def test_the_limit_counts_per_viewing_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the per-session rate: 429 with Retry-After for that handle only."""
    for harness in make_harness(tmp_path, monkeypatch, rate_limit_viewer="3/minute"):
        busy, other = f"r{secrets.token_hex(16)}", f"r{secrets.token_hex(16)}"
        with harness.client() as client:
            answers = [client.get(f"/view/{busy}/series/1/frames/1") for _ in range(4)]
            assert [answer.status_code for answer in answers] == [404, 404, 404, 429]
            assert int(answers[-1].headers["retry-after"]) >= 1
            assert answers[-1].headers["cache-control"] == "no-store"
            assert client.get(f"/view/{other}/series/1/frames/1").status_code == 404
