"""OpenID Connect, authorization-code flow with PKCE, as a confidential client.

Used twice: recipients sign in with their organisation's provider (the tenant policy's
``sso`` block), patients with the Blume portal's. authlib builds the authorization request
and the PKCE challenge; the ID token is checked here with joserfc (signature against the
provider's JWKS, issuer, audience, expiry, nonce).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from blume_contracts.urls import base_url
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

SCOPES: Final = "openid email"
_CACHE_SECONDS: Final = 300.0
_ID_TOKEN_ALGORITHMS: Final = ["RS256", "PS256", "ES256", "EdDSA"]
_CLOCK_LEEWAY_SECONDS: Final = 60


def _s256(code_verifier: str) -> str:
    """The PKCE S256 challenge (RFC 7636 4.2), by authlib."""
    challenge: str = create_s256_code_challenge(code_verifier)  # type: ignore[no-untyped-call]
    return challenge


class OidcError(Exception):
    """The sign-in did not complete (provider unreachable, refused, or a bad answer)."""


@dataclass(frozen=True, slots=True)
class Provider:
    """An identity provider this gateway is a client of (a tenant's, or the portal's)."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    """Kept out of the dataclass's repr, so that no log or traceback shows it."""


@dataclass(frozen=True, slots=True)
class SignInRequest:
    """What the browser carries through the round trip (in a signed cookie)."""

    state: str
    nonce: str
    code_verifier: str

    @classmethod
    def new(cls) -> SignInRequest:
        return cls(
            state=generate_token(32), nonce=generate_token(32), code_verifier=generate_token(64)
        )

    def cookie(self) -> dict[str, str]:
        """The round trip's values as the ``oidc`` cookie carries them (beside the caller's)."""
        return {"s": self.state, "n": self.nonce, "v": self.code_verifier}

    @classmethod
    def from_cookie(cls, value: Mapping[str, Any]) -> SignInRequest | None:
        """The round trip ``cookie`` started; None if the cookie does not hold one."""
        if not all(isinstance(value.get(name), str) for name in ("s", "n", "v")):
            return None
        return cls(state=value["s"], nonce=value["n"], code_verifier=value["v"])


@dataclass(frozen=True, slots=True)
class ProviderAnswer:
    """The query a provider sends the browser back with: a code (or an error) and our state.

    A FastAPI dependency (``Annotated[ProviderAnswer, Depends()]``): the fields are the query
    parameters of both callbacks, the recipient's and the patient's.
    """

    code: str | None = None
    state: str | None = None
    error: str | None = None

    def code_for(self, sign_in: SignInRequest) -> str | None:
        """The code, if the provider gave one for this browser's own round trip."""
        if self.error or not self.code or self.state != sign_in.state:
            return None
        return self.code


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    email: str | None
    email_verified: bool | None
    """The provider's claim; None when it did not make one."""
    claims: dict[str, Any]


class OidcClient:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http
        self._metadata: dict[str, tuple[float, dict[str, Any]]] = {}
        self._keys: dict[str, tuple[float, KeySet]] = {}

    async def _get_json(self, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.get(url, **kwargs)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise OidcError(f"{type(error).__name__} from the identity provider") from None
        if not isinstance(body, dict):
            raise OidcError("the identity provider answered with something other than JSON")
        return body

    async def metadata(self, issuer: str) -> dict[str, Any]:
        cached = self._metadata.get(issuer)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        document = await self._get_json(base_url(issuer) + "/.well-known/openid-configuration")
        # A configured URL may have gained or lost a trailing slash on the way (pydantic adds
        # one to a bare origin); the document's own spelling is what ID tokens carry.
        if base_url(str(document.get("issuer", ""))) != base_url(issuer):
            raise OidcError("the provider's discovery document names another issuer")
        for required in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(document.get(required), str):
                raise OidcError(f"the provider's discovery document has no {required}")
        self._metadata[issuer] = (time.monotonic() + _CACHE_SECONDS, document)
        return document

    async def _key_set(self, jwks_uri: str, *, refresh: bool = False) -> KeySet:
        cached = self._keys.get(jwks_uri)
        if cached and cached[0] > time.monotonic() and not refresh:
            return cached[1]
        try:
            keys = KeySet.import_key_set(await self._get_json(jwks_uri))  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError) as error:
            raise OidcError(f"the provider's keys are unusable ({type(error).__name__})") from None
        self._keys[jwks_uri] = (time.monotonic() + _CACHE_SECONDS, keys)
        return keys

    async def authorization_url(
        self, provider: Provider, redirect_uri: str, request: SignInRequest
    ) -> str:
        document = await self.metadata(provider.issuer)
        return str(
            prepare_grant_uri(
                document["authorization_endpoint"],
                provider.client_id,
                "code",
                redirect_uri=redirect_uri,
                scope=SCOPES,
                state=request.state,
                nonce=request.nonce,
                code_challenge=_s256(request.code_verifier),
                code_challenge_method="S256",
            )
        )

    async def identity(
        self, provider: Provider, redirect_uri: str, request: SignInRequest, code: str
    ) -> Identity:
        """Redeem the code (with the PKCE verifier) and check the ID token."""
        document = await self.metadata(provider.issuer)
        try:
            response = await self._http.post(
                document["token_endpoint"],
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "code_verifier": request.code_verifier,
                },
                auth=(provider.client_id, provider.client_secret),
                headers={"Accept": "application/json"},
            )
            response.raise_for_status()
            tokens = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise OidcError(f"the token request failed ({type(error).__name__})") from None
        id_token = tokens.get("id_token") if isinstance(tokens, dict) else None
        if not isinstance(id_token, str):
            raise OidcError("the provider returned no ID token")
        claims = await self._verified_claims(document, provider, id_token, request.nonce)
        email = claims.get("email")
        if email is None and isinstance(tokens.get("access_token"), str):
            email = await self._userinfo_email(document, tokens["access_token"], claims["sub"])
        return Identity(
            subject=str(claims["sub"]),
            email=email.strip().lower() if isinstance(email, str) else None,
            email_verified=_verified_claim(claims.get("email_verified")),
            claims=claims,
        )

    async def _verified_claims(
        self, document: dict[str, Any], provider: Provider, id_token: str, nonce: str
    ) -> dict[str, Any]:
        keys = await self._key_set(document["jwks_uri"])
        try:
            try:
                token = jwt.decode(id_token, keys, algorithms=_ID_TOKEN_ALGORITHMS)
            except JoseError:  # perhaps a rotated key: fetch the set once more
                keys = await self._key_set(document["jwks_uri"], refresh=True)
                token = jwt.decode(id_token, keys, algorithms=_ID_TOKEN_ALGORITHMS)
            jwt.JWTClaimsRegistry(
                leeway=_CLOCK_LEEWAY_SECONDS,
                iss={"essential": True, "value": document["issuer"]},
                aud={"essential": True, "value": provider.client_id},
                sub={"essential": True},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(token.claims)
        except JoseError as error:
            raise OidcError(f"the ID token is not valid ({type(error).__name__})") from None
        claims = dict(token.claims)
        audience = claims.get("aud")
        if (
            isinstance(audience, list)
            and len(audience) > 1
            and claims.get("azp") != provider.client_id
        ):
            raise OidcError("the ID token was issued to another party")
        return claims

    async def _userinfo_email(
        self, document: dict[str, Any], access_token: str, subject: object
    ) -> str | None:
        endpoint = document.get("userinfo_endpoint")
        if not isinstance(endpoint, str):
            return None
        info = await self._get_json(endpoint, headers={"Authorization": f"Bearer {access_token}"})
        if info.get("sub") != subject:  # OIDC Core 5.3.2: otherwise the answer is not theirs
            return None
        email = info.get("email")
        return email if isinstance(email, str) else None


def _verified_claim(value: Any) -> bool | None:
    """Some providers send the claim as a string; anything unclear counts as not made."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    return None
