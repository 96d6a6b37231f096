"""The sender's routes: the launch and share API (server to server, launch-client bearer),
the one-time launch URL, the sharing page, the status view and Revoke.

Thin: authentication, CSRF, cookies and pages here; the launch store and the events in
``launches``. No route logs a request body, and no path carries PHI: the launch URL holds
an opaque id, the status view a share id.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from blume_contracts.launches import LAUNCHES_PATH, LaunchCreated, LaunchRequest
from blume_contracts.urls import LAUNCH_ROUTE, SHARES_API_ROUTE, launch_url
from fastapi import APIRouter, Form, Request
from pydantic import ValidationError
from starlette.responses import JSONResponse, RedirectResponse, Response

from blume_access_gateway import sender_views as views
from blume_access_gateway.gateway import Gateway
from blume_access_gateway.launches import (
    LaunchRefusal,
    SenderSession,
    SendForm,
)
from blume_access_gateway.models import LaunchClientRecord, ProjectedShareStatus
from blume_access_gateway.oidc import OidcError, SignInRequest
from blume_access_gateway.pages import with_cookies
from blume_access_gateway.routing import (
    GatewayRoutes,
    ProviderReturn,
    RouteRefusedError,
    address_limit,
    route,
)
from blume_access_gateway.sender_form import form_errors
from blume_access_gateway.sso import sso_provider

MAX_LAUNCH_BODY_BYTES: Final = 64 * 1024
SEND_PURPOSE: Final = "send"
SHARE_PATH: Final = "/send/shares/{share_id}"

CsrfField = Annotated[str | None, Form(max_length=512)]
TextField = Annotated[str, Form(max_length=4000)]


def _api_error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _api_refusal(
    status: int, detail: Any, headers: dict[str, str] | None = None
) -> RouteRefusedError:
    return RouteRefusedError(_api_error(status, detail, headers))


def share_json(status: ProjectedShareStatus) -> dict[str, Any]:
    """A share's state for a launch client: counts and times, never PHI."""

    def when(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "share_id": status.share_id,
        "state": status.state,
        "method": status.method,
        "created_at": when(status.accepted_at),
        "expires_at": when(status.expires_at),
        "opened_count": status.opened_count,
        "first_opened_at": when(status.first_opened_at),
        "last_opened_at": when(status.last_opened_at),
        "accessed_count": status.accessed_count,
        "last_accessed_at": when(status.last_accessed_at),
        "reason": status.reason,
    }


class SenderRoutes(GatewayRoutes):
    # The API (server to server) ------------------------------------------------------------

    async def _launch_client(self, request: Request) -> LaunchClientRecord:
        """The launch client the bearer token names, within its rate; else the API error,
        raised (``RouteRefusedError``)."""
        gateway = self.gateway
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        token = bearer.strip() if scheme.lower() == "bearer" else ""
        client = await gateway.launches.client_for(token) if token else None
        if client is None:
            # Without a client to count against, the address is what is rate limited.
            verdict = await gateway.limits.address_request(gateway.client(request).client_ip)
            if not verdict.allowed:
                raise _api_refusal(429, "too many requests")
            if not token:
                raise _api_refusal(401, "a launch-client bearer token is required")
            raise _api_refusal(401, "unknown launch-client token")
        verdict = await gateway.limits.launch_client_request(client.client_id)
        if not verdict.allowed:
            retry = {"Retry-After": str(verdict.retry_after_seconds)}
            raise _api_refusal(429, "too many requests", retry)
        return client

    @route(LAUNCHES_PATH, "POST")
    async def create_launch(self, request: Request) -> Response:
        """``POST /api/v1/launches``: 201 with the launch URL; 401/403/422/429 otherwise."""
        client = await self._launch_client(request)
        body = await request.body()
        if len(body) > MAX_LAUNCH_BODY_BYTES:
            return _api_error(413, "the launch body is too large")
        try:
            launch = LaunchRequest.model_validate_json(body)
        except ValidationError as error:
            return _api_error(422, views.error_fields(error))
        if launch.tenant_id != client.tenant_id:
            forbidden = [{"loc": ["body", "tenant_id"], "msg": "another tenant", "type": "tenant"}]
            return _api_error(403, forbidden)
        if launch.tenant_id not in self.gateway.policies:
            unknown = [{"loc": ["body", "tenant_id"], "msg": "no policy", "type": "tenant"}]
            return _api_error(422, unknown)
        url_id, expires_at = await self.gateway.launches.create(launch, client)
        created = LaunchCreated(
            launch_url=launch_url(self.gateway.public_origin, url_id), expires_at=expires_at
        )
        return JSONResponse(created.model_dump(mode="json"), status_code=201)

    async def _clients_share(
        self, request: Request, share_id: str
    ) -> tuple[LaunchClientRecord, ProjectedShareStatus]:
        """The launch client and the share of its tenant it asks about; else the API error,
        raised."""
        client = await self._launch_client(request)
        status = await self.gateway.launches.status(share_id)
        if status is None or status.tenant_id != client.tenant_id:
            raise _api_refusal(404, "no such share for this tenant")
        return client, status

    @route(SHARES_API_ROUTE, "GET")
    async def share_api(self, request: Request, share_id: str) -> Response:
        _client, status = await self._clients_share(request, share_id)
        return JSONResponse(share_json(status))

    @route(f"{SHARES_API_ROUTE}/revoke", "POST")
    async def revoke_api(self, request: Request, share_id: str) -> Response:
        client, status = await self._clients_share(request, share_id)
        requested_by = f"launch-client:{client.client_id}"
        await self.gateway.launches.revoke(status.tenant_id, share_id, requested_by)
        return JSONResponse({"share_id": share_id, "revocation": "requested"}, status_code=202)

    # The launch URL and the sender's session -----------------------------------------------

    @route(LAUNCH_ROUTE, "GET", check=address_limit)
    async def redeem(self, request: Request, launch_id: str) -> Response:
        """Once: the sender's session cookie and a 303 to the sharing page (or to sign-in)."""
        gateway = self.gateway
        launch = await gateway.launches.redeem(launch_id)
        if isinstance(launch, LaunchRefusal):
            return gateway.pages.render(views.launch_refused_page(request, launch))
        policy = gateway.policies.get(launch.tenant_id)
        if policy is not None and policy.sender_auth == "sso" and policy.staff_sso is not None:
            sign_in = SignInRequest.new()
            try:
                url = await gateway.oidc.authorization_url(
                    sso_provider(policy.staff_sso), gateway.redirect_uri("sender"), sign_in
                )
            except OidcError:
                return gateway.pages.render(views.sender_sign_in_failed_page(request))
            response: Response = RedirectResponse(url, status_code=303)
            gateway.cookies.write(response, "oidc", {"k": "sender", **sign_in.cookie()})
        else:
            response = RedirectResponse("/send", status_code=303)
        gateway.cookies.write(response, "sender", {"l": launch.launch_id})
        return response

    @route("/send/sso/callback", "GET", check=address_limit)
    async def sso_callback(self, request: Request, answer: ProviderReturn) -> Response:
        """Back from the staff provider: the session counts only if the signed-in user is
        the launch's sender (user id or address)."""
        gateway = self.gateway
        sender = await self._session(request, signed_in=False)
        pending = gateway.cookies.read(request, "oidc")
        failed = gateway.pages.render(views.sender_sign_in_failed_page(request))
        gateway.cookies.clear(failed, "oidc")
        if sender is None or sender.request is None or not pending or pending.get("k") != "sender":
            return failed
        policy = gateway.policies.get(sender.launch.tenant_id)
        sign_in = SignInRequest.from_cookie(pending)
        code = answer.code_for(sign_in) if sign_in is not None else None
        if policy is None or policy.staff_sso is None or sign_in is None or code is None:
            return failed
        try:
            identity = await gateway.oidc.identity(
                sso_provider(policy.staff_sso), gateway.redirect_uri("sender"), sign_in, code
            )
        except OidcError:
            return failed
        expected = sender.request.sender
        same_email = (
            identity.email_verified is not False
            and identity.email == str(expected.email).strip().lower()
        )
        if identity.subject != expected.user_id and not same_email:
            mismatch = gateway.pages.render(views.sender_mismatch_page(request, sender))
            gateway.cookies.clear(mismatch, "oidc")
            gateway.cookies.clear(mismatch, "sender")
            return mismatch
        await gateway.launches.mark_signed_in(sender.launch.launch_id)
        response = RedirectResponse("/send", status_code=303)
        gateway.cookies.clear(response, "oidc")
        return response

    async def _session(self, request: Request, *, signed_in: bool = True) -> SenderSession | None:
        """The sender's session; with ``signed_in``, only once any staff sign-in matched."""
        value = self.gateway.cookies.read(request, "sender")
        launch_id = value.get("l") if value else None
        if not isinstance(launch_id, str):
            return None
        sender = await self.gateway.launches.session(launch_id)
        if sender is None or not signed_in:
            return sender
        policy = self.gateway.policies.get(sender.launch.tenant_id)
        if policy is None:
            return None
        if policy.sender_auth == "sso" and sender.launch.signed_in_at is None:
            return None
        return sender

    def _no_session(self, request: Request) -> Response:
        return self.gateway.pages.render(views.session_over_page(request))

    # The sharing page ------------------------------------------------------------------------

    @route("/send", "GET")
    async def sharing_page(self, request: Request) -> Response:
        sender = await self._session(request)
        if sender is None:
            return self._no_session(request)
        if sender.request is None:  # already sent from this launch: its status instead
            return await self._latest_share(request, sender)
        return await self._render_form(request, sender, SendForm.empty(), {})

    async def _render_form(
        self,
        request: Request,
        sender: SenderSession,
        form: SendForm,
        errors: dict[str, str],
        status_code: int = 200,
    ) -> Response:
        gateway = self.gateway
        assert sender.request is not None
        carrier = Response()
        csrf = gateway.csrf.token(request, carrier, SEND_PURPOSE)
        readiness = await gateway.launches.readiness(sender.request)
        policy = gateway.policies[sender.launch.tenant_id]
        earlier = await gateway.launches.earlier_shares(sender.launch)
        page = views.sharing_page(
            sender.request, policy, readiness, form, errors, csrf, earlier, status_code
        )
        return with_cookies(gateway.pages.render(page), carrier)

    async def _latest_share(self, request: Request, sender: SenderSession) -> Response:
        earlier = await self.gateway.launches.earlier_shares(sender.launch)
        mine = [share for share, _status in earlier if share.launch_id == sender.launch.launch_id]
        if not mine:
            return self._no_session(request)
        return RedirectResponse(SHARE_PATH.format(share_id=mine[0].share_id), status_code=303)

    @route("/send", "POST")
    async def send(
        self,
        request: Request,
        method: TextField = "",
        recipient_name: TextField = "",
        recipient_email: TextField = "",
        message: TextField = "",
        expires_in_hours: TextField = "",
        csrf: CsrfField = None,
    ) -> Response:
        """Send: the form checked with the dispatcher's contract, then ``study.send.requested``
        with the sender from the session, never from the form."""
        gateway = self.gateway
        sender = await self._session(request)
        if sender is None:
            return self._no_session(request)
        if sender.request is None:
            return await self._latest_share(request, sender)
        if not gateway.csrf.valid(request, csrf, SEND_PURPOSE):
            return gateway.pages.render(views.sender_csrf_page(sender.request.locale))
        policy = gateway.policies[sender.launch.tenant_id]
        form = SendForm.parse(method, recipient_name, recipient_email, message, expires_in_hours)
        readiness = await gateway.launches.readiness(sender.request)
        errors, send = form_errors(gateway.launches, sender.request, form, policy, readiness)
        if send is None:
            return await self._render_form(request, sender, form, errors, status_code=422)
        share_id = await gateway.launches.send(sender, send)
        return RedirectResponse(SHARE_PATH.format(share_id=share_id), status_code=303)

    # Status and Revoke -------------------------------------------------------------------------

    async def _senders_status(
        self, request: Request, share_id: str
    ) -> tuple[SenderSession, ProjectedShareStatus]:
        """The sender's session and one of its shares; else the page to answer, raised."""
        sender = await self._session(request)
        if sender is None:
            raise RouteRefusedError(self._no_session(request))
        share = await self.gateway.launches.senders_share(sender.launch, share_id)
        status = await self.gateway.launches.status(share_id) if share else None
        if status is None:
            raise RouteRefusedError(self.gateway.pages.render(views.share_not_found_page(request)))
        return sender, status

    @route(SHARE_PATH, "GET")
    async def status_page(self, request: Request, share_id: str) -> Response:
        sender, status = await self._senders_status(request, share_id)
        earlier = await self.gateway.launches.earlier_shares(sender.launch)
        locale = views.session_locale(request, sender)
        return self.gateway.pages.render(views.status_page(locale, status, earlier))

    @route(f"{SHARE_PATH}/timeline", "GET")
    async def timeline(self, request: Request, share_id: str) -> Response:
        """The status view's timeline alone, which the page fetches every second."""
        sender, status = await self._senders_status(request, share_id)
        locale = views.session_locale(request, sender)
        return self.gateway.pages.render(views.timeline_fragment(locale, status))

    @route(f"{SHARE_PATH}/revoke", "GET")
    async def revoke_confirm(self, request: Request, share_id: str) -> Response:
        sender, status = await self._senders_status(request, share_id)
        carrier = Response()
        csrf = self.gateway.csrf.token(request, carrier, f"revoke:{share_id}")
        locale = views.session_locale(request, sender)
        page = views.revoke_confirm_page(locale, status, csrf)
        return with_cookies(self.gateway.pages.render(page), carrier)

    @route(f"{SHARE_PATH}/revoke", "POST")
    async def revoke(self, request: Request, share_id: str, csrf: CsrfField = None) -> Response:
        sender, status = await self._senders_status(request, share_id)
        if not self.gateway.csrf.valid(request, csrf, f"revoke:{share_id}"):
            locale = views.session_locale(request, sender)
            return self.gateway.pages.render(views.sender_csrf_page(locale))
        if status.state != "revoked":
            requested_by = sender.launch.sender_user_id
            await self.gateway.launches.revoke(status.tenant_id, share_id, requested_by)
        return RedirectResponse(SHARE_PATH.format(share_id=share_id), status_code=303)


def sender_routes(gateway: Gateway) -> APIRouter:
    return SenderRoutes(gateway).router()
