"""The recipient's routes: the link page, "View study", the sign-in code, the SSO callback.

Thin: rate limits, CSRF, cookies and pages here; decisions and audit in ``access``.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from blume_contracts.urls import LINK_CODE_ROUTE, LINK_ROUTE
from blume_runtime.tenants import PolicyError
from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from blume_access_gateway import views
from blume_access_gateway.gateway import Gateway
from blume_access_gateway.i18n import browser_locale
from blume_access_gateway.links import LinkLookup, token_fingerprint
from blume_access_gateway.oidc import Identity, OidcError, ProviderAnswer, SignInRequest
from blume_access_gateway.outcomes import (
    CodeSent,
    Granted,
    Refused,
    SignInNeeded,
    Unavailable,
    denial_reason,
)
from blume_access_gateway.pages import Page, with_cookies
from blume_access_gateway.routing import (
    GatewayRoutes,
    ProviderReturn,
    RouteRefusedError,
    address_limit,
    route,
)
from blume_access_gateway.sso import sso_provider

CsrfField = Annotated[str | None, Form(max_length=512)]
CodeField = Annotated[str, Form(max_length=32)]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _link_purpose(token: str) -> str:
    return f"link:{token_fingerprint(token)}"


def _code_purpose(token: str) -> str:
    return f"code:{token_fingerprint(token)}"


class RecipientRoutes(GatewayRoutes):
    async def _link_limit(self, request: Request, token: str) -> None:
        """The opening check of the link's pages: the 429 page when this client or this link
        is over its rate (the refusal audited, within its own limit)."""
        gateway = self.gateway
        client_ip = gateway.client(request).client_ip
        verdict = await gateway.limits.link_request(client_ip, token_fingerprint(token))
        if verdict.allowed:
            return
        if await gateway.limits.may_record_denial(client_ip, token_fingerprint(token)):
            await gateway.access.refuse(token, "rate_limited", gateway.visit(request))
        page = views.rate_limited_page(browser_locale(request), verdict.retry_after_seconds)
        raise RouteRefusedError(gateway.pages.render(page))

    # Routes ------------------------------------------------------------------------------

    @route(LINK_ROUTE, "GET", check=_link_limit)
    async def link_page(self, request: Request, token: str) -> Response:
        """The page the email links to. Scanners fetch it too: it changes nothing."""
        gateway = self.gateway
        lookup = await gateway.access.open_page(token, gateway.visit(request))
        if lookup.link is None or not lookup.usable:
            return self._refused(request, Refused(lookup, denial_reason(lookup.state)))
        cookies = Response()
        csrf = gateway.csrf.token(request, cookies, _link_purpose(token))
        session_id = gateway.session_id(request, "access")
        granted = await gateway.access.in_session(lookup.link.link_id, session_id)
        page = views.link_page(
            lookup.link, csrf, request.url.path, self._form_targets(lookup), granted=granted
        )
        if granted:
            return with_cookies(gateway.render_signed_in(request, page), cookies)
        return with_cookies(gateway.pages.render(page), cookies)

    @route(LINK_ROUTE, "POST", check=_link_limit)
    async def press_view(self, request: Request, token: str, csrf: CsrfField = None) -> Response:
        """ "View study" (and "Send a new code"): what happens is the link's policy."""
        gateway = self.gateway
        if not gateway.csrf.valid(request, csrf, _link_purpose(token)):
            return await self._csrf_failed(request, token, request.url.path)
        session_id = gateway.session_id(request, "access")
        outcome = await gateway.access.press_view(token, session_id, gateway.visit(request))
        match outcome:
            case CodeSent(lookup=lookup, challenge_id=challenge_id):
                assert lookup.link is not None
                response = RedirectResponse(f"{request.url.path}/code", status_code=303)
                cookie = {"c": challenge_id, "l": lookup.link.link_id}
                gateway.cookies.write(response, "otp", cookie)
                return response
            case SignInNeeded():
                return await self._start_sign_in(request, outcome)
        return self._answer(request, outcome)

    @route(LINK_CODE_ROUTE, "GET", check=_link_limit)
    async def code_page(self, request: Request, token: str) -> Response:
        """Where the code is typed; only the browser that asked for the code gets here."""
        gateway = self.gateway
        lookup = await gateway.access.check_page(token, gateway.visit(request))
        pending = gateway.cookies.read(request, "otp") or {}
        if lookup.usable and lookup.link and pending.get("l") != lookup.link.link_id:
            return RedirectResponse(request.url.path.removesuffix("/code"), status_code=303)
        return self._code_page(request, token, lookup)

    @route(LINK_CODE_ROUTE, "POST", check=_link_limit)
    async def enter_code(
        self, request: Request, token: str, code: CodeField = "", csrf: CsrfField = None
    ) -> Response:
        gateway = self.gateway
        link_path = request.url.path.removesuffix("/code")
        if not gateway.csrf.valid(request, csrf, _code_purpose(token)):
            return await self._csrf_failed(request, token, link_path)
        pending = gateway.cookies.read(request, "otp")
        if not pending or not isinstance(pending.get("c"), str):
            return RedirectResponse(link_path, status_code=303)
        visit = gateway.visit(request)
        outcome = await gateway.access.enter_code(token, pending["c"], code, visit)
        if isinstance(outcome, Refused) and outcome.reason in ("wrong_code", "code_expired"):
            return self._code_page(request, token, outcome.lookup, outcome, status_code=400)
        if isinstance(outcome, Refused) and outcome.reason == "locked":
            return self._code_page(request, token, outcome.lookup, outcome, status_code=403)
        return self._answer(request, outcome)

    @route("/sso/callback", "GET", check=address_limit)
    async def sso_callback(self, request: Request, answer: ProviderReturn) -> Response:
        """The organisation's identity provider sends the recipient back here."""
        gateway = self.gateway
        pending = gateway.returning_sign_in(request, "link")
        if pending is None:
            return gateway.pages.render(views.sign_in_failed_page(browser_locale(request)))
        identity = await self._identity(pending, answer)
        visit = gateway.visit(request)
        outcome = await gateway.access.finish_sign_in(str(pending.get("l")), identity, visit)
        response = self._answer(request, outcome)
        gateway.cookies.clear(response, "oidc")
        return response

    # Steps -------------------------------------------------------------------------------

    async def _identity(self, pending: dict[str, Any], answer: ProviderAnswer) -> Identity | None:
        """Who signed in, if the round trip is this browser's own and the provider agrees."""
        policy = self.gateway.policies.get(str(pending.get("t")))
        if policy is None or policy.sso is None:
            return None
        try:
            provider = sso_provider(policy.sso)
        except PolicyError:
            return None
        redirect_uri = self.gateway.redirect_uri("link")
        return await self.gateway.signed_in(provider, redirect_uri, pending, answer)

    async def _start_sign_in(self, request: Request, outcome: SignInNeeded) -> Response:
        gateway = self.gateway
        link = outcome.lookup.link
        assert link is not None
        sign_in = SignInRequest.new()
        try:
            url = await gateway.oidc.authorization_url(
                outcome.provider, gateway.redirect_uri("link"), sign_in
            )
        except OidcError:
            visit = gateway.visit(request)
            failed = await gateway.access.finish_sign_in(link.link_id, None, visit)
            return self._answer(request, failed)
        response = RedirectResponse(url, status_code=303)
        cookie = {"k": "link", "l": link.link_id, "t": link.tenant_id, **sign_in.cookie()}
        gateway.cookies.write(response, "oidc", cookie)
        return response

    def _answer(self, request: Request, outcome: Granted | Refused | Unavailable) -> Response:
        gateway = self.gateway
        match outcome:
            case Granted():
                response = RedirectResponse(outcome.viewer_redirect, status_code=303)
                if outcome.new_session is not None:
                    gateway.write_session(response, "access", outcome.new_session)
                gateway.cookies.clear(response, "otp")
                return response
            case Unavailable(lookup=lookup):
                assert lookup.link is not None
                return gateway.pages.render(views.unavailable_page(lookup.link))
            case Refused():
                return self._refused(request, outcome)

    def _refused(self, request: Request, outcome: Refused) -> Response:
        page = views.refusal_page(
            outcome.lookup,
            outcome.reason,
            fallback_locale=browser_locale(request),
            retry_after=outcome.retry_after_seconds,
        )
        return self.gateway.pages.render(page)

    async def _csrf_failed(self, request: Request, token: str, back_to: str) -> Response:
        gateway = self.gateway
        lookup = await gateway.access.refuse(token, "csrf", gateway.visit(request))
        locale = lookup.link.locale if lookup.link else browser_locale(request)
        return gateway.pages.render(views.csrf_page(locale, back_to))

    def _code_page(
        self,
        request: Request,
        token: str,
        lookup: LinkLookup,
        refusal: Refused | None = None,
        *,
        status_code: int = 200,
    ) -> Response:
        if lookup.link is None or not lookup.usable:
            return self._refused(request, Refused(lookup, denial_reason(lookup.state)))
        cookies = Response()
        code_path = request.url.path
        page: Page = views.code_page(
            lookup.link,
            code_csrf=self.gateway.csrf.token(request, cookies, _code_purpose(token)),
            resend_csrf=self.gateway.csrf.token(request, cookies, _link_purpose(token)),
            code_url=code_path,
            resend_url=code_path.removesuffix("/code"),
            error=refusal.reason if refusal else None,
            tries_left=refusal.tries_left if refusal else 0,
            status_code=status_code,
        )
        page.form_targets = self._form_targets(lookup)
        return with_cookies(self.gateway.pages.render(page), cookies)

    def _form_targets(self, lookup: LinkLookup) -> tuple[str, ...]:
        """Where this link's forms may lead after our redirect: the tenant's viewer and, for
        an SSO link, its identity provider. Browsers check form-action against the redirect
        that follows a form post, so the page's CSP must name them (and nothing else)."""
        link = lookup.link
        policy = self.gateway.policies.get(link.tenant_id) if link else None
        if link is None or policy is None:
            return ()
        targets = [_origin(str(policy.external_viewer_url or policy.viewer_url))]
        if link.recipient_auth == "sso" and policy.sso is not None:
            targets.append(_origin(str(policy.sso.issuer)))
        return tuple(targets)


def recipient_routes(gateway: Gateway) -> APIRouter:
    return RecipientRoutes(gateway).router()
