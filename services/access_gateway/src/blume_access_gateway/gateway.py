"""Everything the web routes need, built once from the settings."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import httpx
from blume_contracts.events import ClientContext
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
from blume_access_gateway.clients import client_context
from blume_access_gateway.cookies import CookieJar, CsrfGuard
from blume_access_gateway.dicomweb import DicomwebClient
from blume_access_gateway.freshness import FreshnessCheck
from blume_access_gateway.help import HelpLibrary, default_help_dir
from blume_access_gateway.i18n import browser_locale, zone
from blume_access_gateway.keys import GatewayKeys
from blume_access_gateway.oidc import (
    Identity,
    OidcClient,
    OidcError,
    Provider,
    ProviderAnswer,
    SignInRequest,
)
from blume_access_gateway.outcomes import AccessSession
from blume_access_gateway.pages import Pages
from blume_access_gateway.ratelimit import RateLimits
from blume_access_gateway.settings import GatewaySettings
from blume_access_gateway.viewer import Viewer

NAME: Final = "access_gateway"
_OIDC_TIMEOUT_SECONDS: Final = 10.0
_PACS_TIMEOUT: Final = httpx.Timeout(30.0, connect=5.0)
_PACS_LIMITS: Final = httpx.Limits(max_connections=64, max_keepalive_connections=32)


@dataclass(slots=True)
class Gateway:
    settings: Settings
    config: GatewaySettings
    keys: GatewayKeys
    policies: dict[str, TenantPolicy]
    events: UnitsOfWork
    access: RecipientAccess
    portal: PatientPortal
    oidc: OidcClient
    http: httpx.AsyncClient
    limits: RateLimits
    cookies: CookieJar
    csrf: CsrfGuard
    pages: Pages
    help: HelpLibrary
    clock: Callable[[], datetime]
    viewer: Viewer
    pacs_http: httpx.AsyncClient

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
        # The PACS gets a client of its own: longer timeouts, more connections, streaming.
        pacs_http = httpx.AsyncClient(
            timeout=_PACS_TIMEOUT, limits=_PACS_LIMITS, follow_redirects=False
        )
        return cls(
            settings=settings,
            config=config,
            keys=keys,
            policies=policies,
            events=events,
            access=RecipientAccess(
                events=events,
                keys=keys,
                sealer=Sealer.from_settings(settings),
                policies=policies,
                limits=limits,
                ticket_issuer=settings.public_base_url,
                clock=clock,
                freshness=freshness,
            ),
            portal=PatientPortal(events, clock, freshness),
            oidc=OidcClient(http),
            http=http,
            limits=limits,
            cookies=cookies,
            csrf=CsrfGuard(keys.csrf, cookies),
            pages=Pages(help_library, zone(config.display_timezone)),
            help=help_library,
            clock=clock,
            viewer=Viewer(
                events=events,
                handle_key=keys.viewer_handle,
                policies=policies,
                dicomweb=DicomwebClient(pacs_http),
                clock=clock,
                freshness=freshness,
            ),
            pacs_http=pacs_http,
        )

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

    def access_session(self, request: Request) -> AccessSession | None:
        value = self.cookies.read(request, "access")
        if not value:
            return None
        try:
            return AccessSession(str(value["l"]), int(value["u"]), value["m"])
        except (KeyError, TypeError, ValueError):
            return None

    async def over_address_limit(self, request: Request) -> Response | None:
        """The 429 page when this client address is over its rate; None while it is not."""
        verdict = await self.limits.address_request(self.client(request).client_ip)
        if verdict.allowed:
            return None
        page = views.rate_limited_page(browser_locale(request), verdict.retry_after_seconds)
        return self.pages.render(page)

    @staticmethod
    def session_cookie(session: AccessSession) -> dict[str, Any]:
        return {"l": session.link_id, "u": session.use_number, "m": session.auth_method}

    @property
    def recipient_redirect_uri(self) -> str:
        return f"{self.settings.public_base_url}/sso/callback"

    @property
    def portal_redirect_uri(self) -> str:
        return f"{self.settings.portal_base_url}/auth/callback"

    def returning_sign_in(self, request: Request, kind: str) -> dict[str, Any] | None:
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
