"""How route classes are wired (``routing``): each handler's own path, method and opening
check, gathered by ``GatewayRoutes.router``; a refusing check answers with its page and the
handler never runs."""

from __future__ import annotations

from typing import cast

from blume_access_gateway.gateway import Gateway
from blume_access_gateway.routing import GatewayRoutes, RouteRefusedError, refused_route, route
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from starlette.responses import PlainTextResponse, Response


class _Routes(GatewayRoutes):
    prefix = "/demo"

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway)
        self.ran: list[str] = []

    async def _closed(self, request: Request, item: str) -> None:
        if item == "shut":
            raise RouteRefusedError(PlainTextResponse(f"no {item}", status_code=429))

    @route("/items/{item}", "GET", check=_closed)
    async def show(self, request: Request, item: str) -> Response:
        self.ran.append(f"show {item}")
        return PlainTextResponse(f"item {item}")

    @route("/items/{item}", "POST")
    async def change(self, item: str) -> Response:
        self.ran.append(f"change {item}")
        return PlainTextResponse(f"changed {item}", status_code=201)


def _client(routes: _Routes) -> TestClient:
    app = FastAPI()
    app.include_router(routes.router())
    app.add_exception_handler(RouteRefusedError, refused_route)
    return TestClient(app)


def test_each_marked_handler_serves_its_own_path_and_method_under_the_prefix() -> None:
    """GET and POST on one path reach the two handlers marked for them; an unmarked method
    (the check) is no route."""
    routes = _Routes(cast(Gateway, None))
    client = _client(routes)

    shown = client.get("/demo/items/a")
    changed = client.post("/demo/items/b")

    assert (shown.status_code, shown.text) == (200, "item a")
    assert (changed.status_code, changed.text) == (201, "changed b")
    assert routes.ran == ["show a", "change b"]
    assert [getattr(r, "path", None) for r in routes.router().routes] == [
        "/demo/items/{item}",
        "/demo/items/{item}",
    ]


def test_a_refusing_opening_check_answers_with_its_page_and_the_handler_never_runs() -> None:
    """The check gets the route's own parameters; its refusal is the response, as it is."""
    routes = _Routes(cast(Gateway, None))

    refused = _client(routes).get("/demo/items/shut")

    assert (refused.status_code, refused.text) == (429, "no shut")
    assert routes.ran == []
