"""Everything the web routes need, built once from the settings."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, TypedDict

import httpx
from blume_contracts.events import ClientContext
from blume_contracts.urls import SIGN_OUT_ROUTE
from blume_runtime.db import Database, utcnow
from blume_runtime.sealing import Sealer
from blume_runtime.settings import Settings
from blume_runtime.tenants import TenantPolicy, load_policies
from blume_runtime.unit_of_work import Relay, UnitsOfWork
from starlette.requests import Request
from starlette.responses import Response

from blume_access_gateway import views
from blume_access_gateway.access import RecipientAccess
from blume_access_gateway.blume import PatientPortal
from blume_access_gateway.clients import Visit, client_context
from blume_access_gateway.cookies import CookieJar, CsrfGuard, SessionCookie
from blume_access_gateway.dicomweb import AiohttpPacs, DicomwebClient, PacsHttp
from blume_access_gateway.freshness import FreshnessCheck
from blume_access_gateway.help import HelpLibrary, default_help_dir
from blume_access_gateway.i18n import browser_locale
from blume_access_gateway.keys import GatewayKeys
from blume_access_gateway.launches import SenderLaunches
from blume_access_gateway.oidc import (
    Identity,
    OidcClient,
    OidcError,
    Provider,
    ProviderAnswer,
    SignInRequest,
)
from blume_access_gateway.pages import Action, Page, Pages, with_cookies
from blume_access_gateway.ratelimit import RateLimits
from blume_access_gateway.sessions import StartedSession
from blume_access_gateway.settings import GatewaySettings
from blume_access_gateway.sign_out import SignOut
from blume_access_gateway.unsubscribe import Unsubscribe
from blume_access_gateway.viewer import Viewer

NAME: Final = "access_gateway"
SIGN_OUT_PURPOSE: Final = "sign-out"
_OIDC_TIMEOUT_SECONDS: Final = 10.0
SignInKind = Literal["link", "patient", "sender"]
"""Whose sign-in round trip it is: a recipient's SSO for a link, the portal's, a sender's."""


class _Shared(TypedDict):
    """What the recipient's steps and the viewer are both built on."""

    events: UnitsOfWork
    policies: dict[str, TenantPolicy]
    clock: Callable[[], datetime]
    freshness: FreshnessCheck


@dataclass(slots=True)
class Gateway:
    settings: Settings
    config: GatewaySettings
    keys: GatewayKeys
    events: UnitsOfWork
    policies: dict[str, TenantPolicy]
    access: RecipientAccess
    portal: PatientPortal
    launches: SenderLaunches
    oidc: OidcClient
    http: httpx.AsyncClient
    limits: RateLimits
    cookies: CookieJar
    csrf: CsrfGuard
    pages: Pages
    help: HelpLibrary
    sign_out: SignOut
    unsubscribe: Unsubscribe
    clock: Callable[[], datetime]
    viewer: Viewer
    pacs_http: PacsHttp

    @classmethod
    def build(
        cls,
        settings: Settings,
        db: Database,
        relay: Relay,
        freshness: FreshnessCheck,
        *,
        config: GatewaySettings | None = None,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> Gateway:
        config = config or GatewaySettings()
        keys = GatewayKeys.from_settings(settings, config)
        policies = load_policies(settings.tenant_policy_file)
        events = UnitsOfWork(NAME, db, relay)
        limits = RateLimits.from_settings(config)
        help_library = HelpLibrary.load(config.help_dir or default_help_dir())
        http = http or httpx.AsyncClient(timeout=_OIDC_TIMEOUT_SECONDS, follow_redirects=False)
        cookies = CookieJar(keys.cookies, secure=config.cookie_secure)
        sealer = Sealer.from_settings(settings)
        # The PACS gets a client of its own: longer timeouts, more connections, streaming.
        pacs_http = AiohttpPacs()
        shared = _Shared(events=events, policies=policies, clock=clock, freshness=freshness)
        access = RecipientAccess(
            **shared,
            keys=keys,
            sealer=sealer,
            limits=limits,
            ticket_issuer=settings.public_base_url,
        )
        return cls(
            settings=settings,
            config=config,
            keys=keys,
            events=events,
            policies=policies,
            access=access,
            portal=PatientPortal(events, clock, freshness),
            launches=SenderLaunches(events, sealer, keys.study_key, policies, clock),
            oidc=OidcClient(http),
            http=http,
            limits=limits,
            cookies=cookies,
            csrf=CsrfGuard(keys.csrf, cookies),
            pages=Pages(help_library, policies),
            help=help_library,
            sign_out=SignOut(events, clock),
            unsubscribe=Unsubscribe(events, sealer, clock),
            clock=clock,
            viewer=Viewer(
                **shared, handle_key=keys.viewer_handle, dicomweb=DicomwebClient(pacs_http)
            ),
            pacs_http=pacs_http,
        )

    async def record_counted_denials(self, *, everything: bool = False) -> int:
        """The counted denials of links and of portal entries (``denial_tally``)."""
        links = await self.access.record_counted_denials(everything=everything)
        return links + await self.portal.record_counted_denials(everything=everything)

    async def close(self) -> None:
        await self.http.aclose()
        await self.pacs_http.aclose()

    # Small helpers the routes share ------------------------------------------------------

    def client(self, request: Request) -> ClientContext:
        return client_context(request, self.config.trusted_proxies)

    @staticmethod
    def request_id() -> str:
        """Correlation id of a request that belongs to no share (an unknown token)."""
        return f"gw-{uuid.uuid4()}"

    def visit(self, request: Request) -> Visit:
        return Visit(self.client(request), self.request_id())

    def render_signed_in(self, request: Request, page: Page) -> Response:
        """A page shown to someone signed in: with the sign-out button (and its CSRF token)."""
        carrier = Response()
        csrf = self.csrf.token(request, carrier, SIGN_OUT_PURPOSE)
        page.sign_out = Action("sign_out.button", SIGN_OUT_ROUTE, csrf)
        return with_cookies(self.pages.render(page), carrier)

    def write_session(
        self, response: Response, kind: SessionCookie, started: StartedSession
    ) -> None:
        """The cookie naming a new server-side session, living no longer than it does."""
        remaining = started.row.expires_at - self.clock()
        self.cookies.write(response, kind, {"s": started.session_id}, lifetime=remaining)

    def session_id(self, request: Request, kind: SessionCookie) -> str | None:
        """The server-side session id a signed cookie carries (``sessions``), if any."""
        value = self.cookies.read(request, kind)
        session_id = value.get("s") if value else None
        return session_id if isinstance(session_id, str) else None

    async def over_address_limit(self, request: Request) -> Response | None:
        """The 429 page when this client address is over its rate; None while it is not."""
        verdict = await self.limits.address_request(self.client(request).client_ip)
        if verdict.allowed:
            return None
        page = views.rate_limited_page(browser_locale(request), verdict.retry_after_seconds)
        return self.pages.render(page)

    def redirect_uri(self, kind: SignInKind) -> str:
        """Where the identity provider sends a sign-in of ``kind`` back to: the patient's to
        the portal, the recipient's and the sender's to the gateway itself."""
        if kind == "patient":
            return f"{self.settings.portal_base_url}/auth/callback"
        if kind == "sender":
            return f"{self.settings.public_base_url}/send/sso/callback"
        return f"{self.settings.public_base_url}/sso/callback"

    def returning_sign_in(self, request: Request, kind: SignInKind) -> dict[str, Any] | None:
        """The sign-in round trip this browser started (its ``oidc`` cookie), if it is of
        ``kind``: ``link`` (a recipient's SSO) or ``patient`` (the portal's)."""
        pending = self.cookies.read(request, "oidc")
        return pending if pending and pending.get("k") == kind else None

    async def signed_in(
        self,
        provider: Provider,
        redirect_uri: str,
        pending: Mapping[str, Any],
        answer: ProviderAnswer,
    ) -> Identity | None:
        """Who signed in, if the provider's answer is for this browser's own round trip and
        its code redeems; None when the sign-in failed."""
        sign_in = SignInRequest.from_cookie(pending)
        code = answer.code_for(sign_in) if sign_in is not None else None
        if sign_in is None or code is None:
            return None
        try:
            return await self.oidc.identity(provider, redirect_uri, sign_in, code)
        except OidcError:
            return None

    def portal_provider(self) -> Provider | None:
        config = self.config
        if not config.portal_sign_in_configured:
            return None
        assert config.portal_oidc_issuer is not None
        assert config.portal_oidc_client_id is not None
        secret = config.portal_oidc_client_secret
        return Provider(
            issuer=config.portal_oidc_issuer,
            client_id=config.portal_oidc_client_id,
            client_secret=secret.get_secret_value() if secret is not None else "",
        )

    @property
    def public_origin(self) -> str:
        return self.settings.public_base_url
