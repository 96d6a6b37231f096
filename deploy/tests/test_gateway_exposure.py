"""The public Ingress serves the recipient's and patient's pages and nothing else: every
page route of the gateway application is under one of its paths, and no API route
(/api/v1/..., server-to-server only) or probe is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from blume_access_gateway.app import create_app
from starlette.routing import BaseRoute

from deploy.tests.manifests import OVERLAYS, named, render
from services.access_gateway.tests.conftest import Harness, make_harness

INTERNAL: Final = ("/api/", "/healthz")
"""Server-to-server API and probes: reachable through the internal Service only."""
PINNED_API: Final = ("/api/v1/launches", "/api/v1/shares/shr_x", "/api/v1/shares/shr_x/revoke")
"""The API paths DESIGN.md pins, whether or not this checkout serves them yet."""


def route_paths(routes: list[BaseRoute]) -> Iterator[str]:
    """Every path the application routes, looking into included routers (FastAPI keeps
    them whole; the gateway includes its routers without a prefix)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from route_paths(included.routes)
        else:
            yield str(getattr(route, "path", ""))


@pytest.fixture
def gateway_routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    harness_maker = make_harness(tmp_path, monkeypatch)
    harness: Harness = next(harness_maker)
    yield sorted(set(route_paths(create_app(harness.gateway).routes)))
    next(harness_maker, None)


def exposes(paths: list[dict[str, str]], route: str) -> bool:
    for path in paths:
        prefix = path["path"]
        if path["pathType"] == "Exact" and route == prefix:
            return True
        if path["pathType"] == "Prefix":
            stem = prefix.rstrip("/")
            if route == stem or route.startswith(stem + "/"):
                return True
    return False


def _ingress_paths(overlay: str) -> list[dict[str, str]]:
    ingress = named(render(overlay), "Ingress", "access-gateway")
    return [path for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_page_route_and_no_api_route_is_public(
    overlay: str, gateway_routes: list[str]
) -> None:
    """Each route the gateway serves is public unless it is internal, and then it is not."""
    paths = _ingress_paths(overlay)
    assert len(gateway_routes) > 5
    for route in gateway_routes:
        internal = route.startswith(INTERNAL)
        assert exposes(paths, route) != internal, route
    for route in PINNED_API:
        assert not exposes(paths, route), route


def test_a_prefix_exposes_only_whole_segments() -> None:
    """/s/ exposes /s/{token} and not /search; Exact /viewer exposes /viewer only."""
    paths = [{"path": "/s/", "pathType": "Prefix"}, {"path": "/viewer", "pathType": "Exact"}]
    assert exposes(paths, "/s/{token}")
    assert not exposes(paths, "/search")
    assert exposes(paths, "/viewer")
    assert not exposes(paths, "/viewer/x")
