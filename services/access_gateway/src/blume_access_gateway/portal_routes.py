"""The Blume deep link and patient sign-in (``BLUME_PORTAL_BASE_URL`` = ``<gateway>/blume``).

The emailed ``/blume/studies/<entry id>`` shows a signed-in patient their own study; anyone
not signed in goes to the portal's identity provider and comes back to the same study.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlencode

from blume_contracts.urls import PORTAL_MOUNT, PORTAL_STUDY_ROUTE, portal_study_path
from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from blume_access_gateway import views
from blume_access_gateway.blume import PORTAL_HOME, safe_return_path
from blume_access_gateway.gateway import Gateway
from blume_access_gateway.grants import EntryRefusal
from blume_access_gateway.i18n import browser_locale
from blume_access_gateway.oidc import OidcError, SignInRequest
from blume_access_gateway.routing import GatewayRoutes, ProviderReturn, address_limit, route
from blume_access_gateway.viewer import Refusal
from blume_access_gateway.viewer_routes import ViewerRoutes

PATIENT_ID_CLAIM: Final = "blume_patient_id"
"""The portal's provider names the patient by their Blume id: this claim, else ``sub``."""


def _to_sign_in(return_path: str) -> Response:
    query = urlencode({"next": safe_return_path(return_path)})
    return RedirectResponse(f"{PORTAL_MOUNT}/login?{query}", status_code=303)


class PortalRoutes(GatewayRoutes):
    prefix = PORTAL_MOUNT

    async def _patient(self, request: Request) -> str | None:
        """The signed-in patient: whose live server-side session the cookie names."""
        return await self.gateway.portal.signed_in(self.gateway.session_id(request, "patient"))

    @route("/", "GET", check=address_limit)
    async def home(self, request: Request) -> Response:
        patient = await self._patient(request)
        if patient is None:
            return _to_sign_in(PORTAL_HOME)
        locale = await self.gateway.portal.patient_locale(patient)
        return self.gateway.render_signed_in(request, views.portal_home_page(locale))

    @route(PORTAL_STUDY_ROUTE, "GET", check=address_limit)
    async def study(self, request: Request, entry_id: str) -> Response:
        """The study, to the patient whose record holds it; 404 to everyone else."""
        gateway = self.gateway
        patient = await self._patient(request)
        if patient is None:
            return _to_sign_in(portal_study_path(entry_id))
        shown = await gateway.portal.view(
            entry_id, patient, gateway.client(request), gateway.request_id()
        )
        if shown is EntryRefusal.NOT_CURRENT:
            locale = await gateway.portal.patient_locale(patient)
            return gateway.render_signed_in(request, views.try_again_page(locale))
        if isinstance(shown, EntryRefusal):
            locale = await gateway.portal.patient_locale(patient)
            return gateway.render_signed_in(request, views.study_not_found_page(locale))
        policy = gateway.policies.get(shown.tenant_id)
        organisation = policy.display_name if policy else shown.tenant_id
        viewer = await self._viewer(request, shown.entry_id, patient)
        return gateway.render_signed_in(request, views.study_page(shown, organisation, viewer))

    async def _viewer(
        self, request: Request, entry_id: str, patient: str
    ) -> dict[str, object] | None:
        """The images of the entry, through the same scoped proxy as a recipient's, when
        the tenant names its PACS and the study is on it (its absence audited)."""
        routes = ViewerRoutes(self.gateway)
        handle = self.gateway.viewer.patient_handle(entry_id, patient)
        scope = await self.gateway.viewer.scope(
            handle,
            access_session=None,
            patient_session=self.gateway.session_id(request, "patient"),
        )
        if isinstance(scope, Refusal) or routes.viewer.pacs(scope) is None:
            return None
        index = await routes.index_or_audit(scope, self.gateway.client(request))
        return routes.context(scope, index) if index is not None else None

    @route("/login", "GET", check=address_limit)
    async def login(self, request: Request, next: str | None = None) -> Response:
        """Off to the portal's identity provider; the return path rides in a signed cookie."""
        gateway = self.gateway
        provider = gateway.portal_provider()
        if provider is None:
            page = views.portal_sign_in_unavailable_page(browser_locale(request))
            return gateway.pages.render(page)
        sign_in = SignInRequest.new()
        try:
            url = await gateway.oidc.authorization_url(
                provider, gateway.redirect_uri("patient"), sign_in
            )
        except OidcError:
            page = views.portal_sign_in_failed_page(browser_locale(request))
            return gateway.pages.render(page)
        response = RedirectResponse(url, status_code=303)
        cookie = {"k": "patient", "r": safe_return_path(next), **sign_in.cookie()}
        gateway.cookies.write(response, "oidc", cookie)
        return response

    @route("/auth/callback", "GET", check=address_limit)
    async def callback(self, request: Request, answer: ProviderReturn) -> Response:
        gateway = self.gateway
        pending = gateway.returning_sign_in(request, "patient")
        provider = gateway.portal_provider()
        identity = None
        if pending is not None and provider is not None:
            redirect_uri = gateway.redirect_uri("patient")
            identity = await gateway.signed_in(provider, redirect_uri, pending, answer)
        if pending is None or identity is None:
            failed = gateway.pages.render(views.portal_sign_in_failed_page(browser_locale(request)))
            gateway.cookies.clear(failed, "oidc")
            return failed
        patient = identity.claims.get(PATIENT_ID_CLAIM) or identity.subject
        response = RedirectResponse(safe_return_path(str(pending.get("r"))), status_code=303)
        gateway.write_session(response, "patient", await gateway.portal.sign_in(str(patient)))
        gateway.cookies.clear(response, "oidc")
        return response


def portal_routes(gateway: Gateway) -> APIRouter:
    return PortalRoutes(gateway).router()
