"""The FastAPI application: routes, static files, error pages, security headers.

Every response passes the gateway's own three layers (``HeaderLimitMiddleware`` outermost,
``HttpTelemetryMiddleware``, ``SecurityMiddleware``). The image route, hit dozens of times a
second by a scrolling viewer, takes a shortcut (``GatewayApp``): through those same three
layers straight to its Starlette route, past FastAPI's and Starlette's own middleware and
router, which cost about a tenth of the gateway's CPU per image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from blume_contracts.locales import DEFAULT_LOCALE
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from blume_access_gateway import views
from blume_access_gateway.gateway import Gateway
from blume_access_gateway.help_routes import demo_viewer_routes, help_routes
from blume_access_gateway.http_telemetry import HttpTelemetryMiddleware
from blume_access_gateway.i18n import browser_locale
from blume_access_gateway.orthanc_auth import orthanc_auth_routes
from blume_access_gateway.portal_routes import portal_routes
from blume_access_gateway.recipient_routes import recipient_routes
from blume_access_gateway.routing import RouteRefusedError, refused_route
from blume_access_gateway.security import ErrorPage, HeaderLimitMiddleware, SecurityMiddleware
from blume_access_gateway.sender_routes import sender_routes
from blume_access_gateway.session_routes import session_routes
from blume_access_gateway.viewer_routes import viewer_routes

STATIC: Final = Path(__file__).parent / "static"


class GatewayApp(FastAPI):
    """FastAPI, but a request its ``shortcut`` route matches fully (path and method) goes
    straight to that route through the gateway's own layers; any other request, the
    shortcut's path with another method included, takes the whole application."""

    shortcut: tuple[Route, ASGIApp] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.shortcut is not None:
            route, layered = self.shortcut
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope["app"] = self
                scope.update(child_scope)
                await layered(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _gateway_layers(app: ASGIApp, *, hsts: bool, error_page: ErrorPage) -> ASGIApp:
    """The shortcut's own instances of the layers ``create_app`` adds, in the same order."""
    secured = SecurityMiddleware(app, hsts=hsts, error_page=error_page)
    return HeaderLimitMiddleware(HttpTelemetryMiddleware(secured))


def create_app(gateway: Gateway) -> GatewayApp:
    app = GatewayApp(
        title="Blume Share access gateway",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # FastAPI's own spans carry the raw path (``/s/<token>``): ours carry the route
        # template only (http_telemetry), so FastAPI's are off.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        # Starlette's slash redirect builds its Location from the request's Host header
        # (``/s/<token>/`` -> ``http://evil.example/s/<token>``): a stray slash is a 404.
        redirect_slashes=False,
    )
    app.state.gateway = gateway
    frame_route, viewer_router = viewer_routes(gateway)
    # First: the image proxy's route is matched before any other (viewer_routes).
    app.router.routes.insert(0, frame_route)
    app.include_router(recipient_routes(gateway))
    app.include_router(portal_routes(gateway))
    app.include_router(sender_routes(gateway))
    app.include_router(session_routes(gateway))
    app.include_router(help_routes(gateway))
    app.include_router(demo_viewer_routes(gateway))
    app.include_router(viewer_router)
    app.include_router(orthanc_auth_routes(gateway))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(RouteRefusedError, refused_route)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        if error.status_code == 404:
            return gateway.pages.render(views.not_found_page(browser_locale(request)))
        return PlainTextResponse(
            str(error.detail), status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, _error: RequestValidationError) -> Response:
        return gateway.pages.render(views.bad_request_page(browser_locale(request)))

    async def error_page(_scope: Scope) -> tuple[int, dict[str, str], bytes]:
        response = gateway.pages.render(views.error_page(DEFAULT_LOCALE))
        headers = {key.decode(): value.decode() for key, value in response.raw_headers}
        return response.status_code, headers, bytes(response.body)

    hsts = gateway.settings.public_base_url.startswith("https://")
    app.add_middleware(SecurityMiddleware, hsts=hsts, error_page=error_page)
    app.add_middleware(HttpTelemetryMiddleware)
    # Added last, so outermost: oversized headers never reach a parser or a route.
    app.add_middleware(HeaderLimitMiddleware)
    layered = _gateway_layers(frame_route.handle, hsts=hsts, error_page=error_page)
    app.shortcut = (frame_route, layered)
    return app
