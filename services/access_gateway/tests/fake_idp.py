"""A small OpenID provider for tests: discovery, authorize (with a sign-in form), token
(client authentication and PKCE S256 checked), JWKS and userinfo; RS256 ID tokens.

Route tests call it in-process (``handle`` behind ``httpx.MockTransport``); the browser
tests serve ``asgi_app()`` over real HTTP and sign in through its form.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from joserfc import jwt
from joserfc.jwk import RSAKey


@dataclass
class _Pending:
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str
    email: str
    claims: dict[str, Any]


@dataclass
class FakeIdentityProvider:
    issuer: str
    client_id: str
    client_secret: str
    key: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, {"kid": "test-key"}, private=True)
    )
    codes: dict[str, _Pending] = field(default_factory=dict)
    access_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    id_token_overrides: dict[str, Any] = field(default_factory=dict)
    """Claims to force into the next ID tokens (a wrong nonce, another audience...)."""
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Extra claims of the people who sign in through the form, by email."""

    # The protocol -------------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        }

    def authorize(
        self, params: dict[str, str], email: str, claims: dict[str, Any] | None = None
    ) -> str:
        """The user signed in as ``email``: the redirect back to the client, with a code."""
        assert params.get("response_type") == "code"
        assert params.get("client_id") == self.client_id
        assert params.get("code_challenge_method") == "S256", "PKCE S256 is required"
        assert "openid" in params.get("scope", "").split()
        code = secrets.token_urlsafe(24)
        self.codes[code] = _Pending(
            client_id=params["client_id"],
            redirect_uri=params["redirect_uri"],
            code_challenge=params["code_challenge"],
            nonce=params["nonce"],
            email=email,
            claims=claims if claims is not None else self.users.get(email, {}),
        )
        query = urlencode({"code": code, "state": params["state"]})
        return f"{params['redirect_uri']}?{query}"

    def token(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        self.token_requests.append(form)
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if authorization != f"Basic {expected}":
            return 401, {"error": "invalid_client"}
        pending = self.codes.pop(form.get("code", ""), None)
        if pending is None or form.get("grant_type") != "authorization_code":
            return 400, {"error": "invalid_grant"}
        if form.get("redirect_uri") != pending.redirect_uri:
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri"}
        verifier = form.get("code_verifier", "")
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        if challenge != pending.code_challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE"}
        now = int(time.time())
        subject = f"sub-{hashlib.sha256(pending.email.encode()).hexdigest()[:12]}"
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": pending.nonce,
            "email": pending.email,
            "email_verified": True,
            **pending.claims,
            **self.id_token_overrides,
        }
        id_token = jwt.encode({"alg": "RS256", "kid": "test-key"}, claims, self.key)
        access_token = secrets.token_urlsafe(24)
        self.access_tokens[access_token] = {"sub": subject, "email": pending.email}
        return 200, {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    def userinfo(self, authorization: str | None) -> tuple[int, dict[str, Any]]:
        token = (authorization or "").removeprefix("Bearer ")
        info = self.access_tokens.get(token)
        return (200, info) if info else (401, {"error": "invalid_token"})

    # In-process, for route tests --------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=self.discovery())
        if path == "/jwks":
            return httpx.Response(200, json=self.jwks())
        if path == "/token":
            form = {key: values[0] for key, values in parse_qs(request.content.decode()).items()}
            status, body = self.token(form, request.headers.get("authorization"))
            return httpx.Response(status, json=body)
        if path == "/userinfo":
            status, body = self.userinfo(request.headers.get("authorization"))
            return httpx.Response(status, json=body)
        return httpx.Response(404)

    # Over HTTP, for the browser tests ---------------------------------------------------

    def asgi_app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/.well-known/openid-configuration")
        async def discovery() -> JSONResponse:
            return JSONResponse(self.discovery())

        @app.get("/jwks")
        async def jwks() -> JSONResponse:
            return JSONResponse(self.jwks())

        @app.get("/authorize")
        async def sign_in_form(request: Request) -> HTMLResponse:
            hidden = "".join(
                f'<input type="hidden" name="{name}" value="{value}">'
                for name, value in request.query_params.items()
            )
            return HTMLResponse(
                "<!doctype html><title>Test identity provider</title>"
                "<h1>Sign in</h1>"
                f'<form method="post" action="/authorize">{hidden}'
                '<label>Email <input name="login_email" id="login_email"></label>'
                '<button type="submit" id="sign-in">Sign in</button></form>'
            )

        @app.post("/authorize")
        async def signed_in(request: Request, login_email: str = Form()) -> Response:
            form = {key: str(value) for key, value in (await request.form()).items()}
            form.pop("login_email", None)
            return RedirectResponse(self.authorize(form, login_email), status_code=303)

        @app.post("/token")
        async def token(request: Request) -> JSONResponse:
            form = {key: str(value) for key, value in (await request.form()).items()}
            status, body = self.token(form, request.headers.get("authorization"))
            return JSONResponse(body, status_code=status)

        @app.get("/userinfo")
        async def userinfo(request: Request) -> JSONResponse:
            status, body = self.userinfo(request.headers.get("authorization"))
            return JSONResponse(body, status_code=status)

        return app


def query_of(url: str) -> dict[str, str]:
    """The query parameters of a URL, one value each."""
    return {key: values[0] for key, values in parse_qs(url.split("?", 1)[1]).items()}


def as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
