"""Sign-out for everyone the gateway signs in: POST ``/sign-out`` (CSRF-protected) ends the
browser's server-side sessions, audits it, clears the cookies and tells the browser to drop
what it kept of this site (``Clear-Site-Data``); ``/signed-out`` says so. And the way out of
Blume emails: ``/unsubscribe/<token>`` (``unsubscribe``)."""

from __future__ import annotations

from typing import Annotated, Final

from blume_contracts.tokens import UnsubscribeClaims
from blume_contracts.urls import SIGN_OUT_ROUTE, SIGNED_OUT_ROUTE, UNSUBSCRIBE_ROUTE
from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from blume_access_gateway import views
from blume_access_gateway.cookies import CookieKind
from blume_access_gateway.gateway import SIGN_OUT_PURPOSE, Gateway
from blume_access_gateway.i18n import browser_locale
from blume_access_gateway.routing import GatewayRoutes, address_limit, route

CsrfField = Annotated[str | None, Form(max_length=512)]
_CLEAR_SITE_DATA: Final = '"cache", "cookies", "storage"'
_SIGNED_IN_COOKIES: Final[tuple[CookieKind, ...]] = ("access", "patient", "otp", "oidc")


class SessionRoutes(GatewayRoutes):
    @route(SIGN_OUT_ROUTE, "POST", check=address_limit)
    async def sign_out(self, request: Request, csrf: CsrfField = None) -> Response:
        gateway = self.gateway
        if not gateway.csrf.valid(request, csrf, SIGN_OUT_PURPOSE):
            # A forged sign-out ends nothing; the person's own page still signs them out.
            return gateway.pages.render(views.csrf_page(browser_locale(request), SIGNED_OUT_ROUTE))
        sessions = {kind: gateway.session_id(request, kind) for kind in ("access", "patient")}
        await gateway.sign_out.sign_out(
            access_session=sessions["access"],
            patient_session=sessions["patient"],
            client=gateway.client(request),
            request_id=gateway.request_id(),
        )
        for ended in filter(None, sessions.values()):
            gateway.viewer.forget_session(ended)
        response = RedirectResponse(SIGNED_OUT_ROUTE, status_code=303)
        response.headers["Clear-Site-Data"] = _CLEAR_SITE_DATA
        for kind in _SIGNED_IN_COOKIES:
            gateway.cookies.clear(response, kind)
        return response

    @route(UNSUBSCRIBE_ROUTE, "GET", check=address_limit)
    async def confirm_unsubscribe(self, request: Request, token: str) -> Response:
        """What a person (or a link scanner) opening the unsubscribe URL sees: a button.
        A GET never unsubscribes."""
        claims = await self._claims(request, token)
        if isinstance(claims, Response):
            return claims
        locale = await self.gateway.portal.patient_locale(claims.blume_patient_id)
        return self.gateway.pages.render(views.unsubscribe_page(locale, request.url.path))

    @route(UNSUBSCRIBE_ROUTE, "POST", check=address_limit)
    async def unsubscribe(self, request: Request, token: str) -> Response:
        """RFC 8058 one-click: a mail client POSTs ``List-Unsubscribe=One-Click`` with no
        cookie and no CSRF token; the sealed token is the authority. Audited; 200."""
        gateway = self.gateway
        claims = await self._claims(request, token)
        if isinstance(claims, Response):
            return claims
        await gateway.unsubscribe.unsubscribe(claims, gateway.client(request), gateway.request_id())
        locale = await gateway.portal.patient_locale(claims.blume_patient_id)
        return gateway.pages.render(views.unsubscribed_page(locale))

    async def _claims(self, request: Request, token: str) -> UnsubscribeClaims | Response:
        """Whose emails the token names; else the 404 page (a token we did not seal)."""
        claims = self.gateway.unsubscribe.claims(token)
        if claims is None:
            return self.gateway.pages.render(views.not_found_page(browser_locale(request)))
        return claims

    @route(SIGNED_OUT_ROUTE, "GET")
    async def signed_out(self, request: Request) -> Response:
        return self.gateway.pages.render(views.signed_out_page(browser_locale(request)))


def session_routes(gateway: Gateway) -> APIRouter:
    return SessionRoutes(gateway).router()
