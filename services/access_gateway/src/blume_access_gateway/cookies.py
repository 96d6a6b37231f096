"""Signed, stateless browser state: CSRF tokens and the cookies the gateway sets.

Nothing here is secret from the browser that holds it (values are signed, not encrypted),
so no cookie carries PHI or a link token: only opaque ids.

- ``csrf``: a random nonce (SameSite=Strict). A form carries a token signed over that nonce
  and the page it belongs to, so a form posted from elsewhere, or for another link, fails.
- ``access``: the id of the recipient's server-side session for one link after a grant
  (Strict); pressing "View study" again within it does not take another use or another
  sign-in, and is never re-signed: the session ends 30 minutes after the grant at most.
- ``otp``: which sign-in code this browser asked for (Strict): a code works only where it
  was requested.
- ``oidc``: state, nonce and PKCE verifier of a sign-in round trip. SameSite=Lax, because
  the identity provider's redirect back is a cross-site navigation that a Strict cookie
  would not survive.
- ``patient``: the id of a Blume patient's server-side portal session. Lax, so that the
  study link in the email (a cross-site navigation) finds a signed-in patient signed in.
- ``sender``: the sender's session on the sharing page, naming the redeemed launch. Lax:
  OmegaAI opens the launch URL from another site, and a Strict cookie set on that
  navigation's redirect would not be sent to the sharing page it leads to.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, Literal

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

CookieKind = Literal["csrf", "access", "otp", "oidc", "patient", "sender"]
SessionCookie = Literal["access", "patient"]
"""Cookies that carry only a server-side session's id (``sessions``)."""


@dataclass(frozen=True, slots=True)
class _Rule:
    """How a kind of cookie is sent (see the module's docstring for why) and how long the
    signature on it holds."""

    same_site: Literal["strict", "lax"]
    lifetime: timedelta


_RULES: Final[dict[CookieKind, _Rule]] = {
    "csrf": _Rule("strict", timedelta(hours=1)),
    # The cookie's own limit; the session row's absolute end (``sessions``) is what counts.
    "access": _Rule("strict", timedelta(minutes=30)),
    "otp": _Rule("strict", timedelta(minutes=10)),
    "oidc": _Rule("lax", timedelta(minutes=10)),
    "patient": _Rule("lax", timedelta(minutes=30)),
    "sender": _Rule("lax", timedelta(minutes=30)),
}


@dataclass(frozen=True, slots=True)
class CookieJar:
    """Reads and writes the gateway's signed cookies."""

    key: bytes
    secure: bool
    _serializers: dict[CookieKind, URLSafeTimedSerializer] = field(
        init=False, repr=False, compare=False
    )
    """One per kind, made once: the image route reads a cookie on every image."""

    def __post_init__(self) -> None:
        serializers = {
            kind: URLSafeTimedSerializer(self.key, salt=f"cookie/{kind}") for kind in _RULES
        }
        object.__setattr__(self, "_serializers", serializers)

    def name(self, kind: CookieKind) -> str:
        # The __Host- prefix makes browsers refuse the cookie unless Secure, Path=/ and no
        # Domain: no sibling subdomain can plant or overwrite it.
        return f"__Host-blume_{kind}" if self.secure else f"blume_{kind}"

    def _serializer(self, kind: CookieKind) -> URLSafeTimedSerializer:
        return self._serializers[kind]

    def read(self, request: Request, kind: CookieKind) -> dict[str, Any] | None:
        raw = request.cookies.get(self.name(kind))
        if not raw:
            return None
        try:
            value = self._serializer(kind).loads(raw, max_age=_max_age(_RULES[kind].lifetime))
        except BadSignature:  # also an expired signature
            return None
        return value if isinstance(value, dict) else None

    def write(
        self,
        response: Response,
        kind: CookieKind,
        value: dict[str, Any],
        *,
        lifetime: timedelta | None = None,
    ) -> None:
        """Set the cookie; ``lifetime`` may shorten the kind's own (never lengthen it)."""
        own = _RULES[kind].lifetime
        lasts = own if lifetime is None else min(lifetime, own)
        response.set_cookie(
            self.name(kind),
            self._serializer(kind).dumps(value),
            max_age=_max_age(lasts),
            path="/",
            secure=self.secure,
            httponly=True,
            samesite=_RULES[kind].same_site,
        )

    def clear(self, response: Response, kind: CookieKind) -> None:
        # A deletion matches the cookie only with the attributes it was set with.
        response.delete_cookie(
            self.name(kind),
            path="/",
            secure=self.secure,
            httponly=True,
            samesite=_RULES[kind].same_site,
        )


@dataclass(frozen=True, slots=True)
class CsrfGuard:
    """Signed double-submit tokens, each bound to the page (``purpose``) that rendered it."""

    key: bytes
    cookies: CookieJar

    def _serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.key, salt="csrf")

    def token(self, request: Request, response: Response, purpose: str) -> str:
        """A token for a form on the page; sets the nonce cookie if the browser has none."""
        nonce = getattr(request.state, "csrf_nonce", None)  # one nonce per page, however many forms
        if nonce is None:
            current = self.cookies.read(request, "csrf")
            if current and isinstance(current.get("n"), str):
                nonce = current["n"]
            else:
                nonce = secrets.token_urlsafe(24)
                self.cookies.write(response, "csrf", {"n": nonce})
            request.state.csrf_nonce = nonce
        return self._serializer().dumps({"n": nonce, "p": purpose})

    def valid(self, request: Request, submitted: str | None, purpose: str) -> bool:
        cookie = self.cookies.read(request, "csrf")
        if not submitted or not cookie or not isinstance(cookie.get("n"), str):
            return False
        try:
            claims = self._serializer().loads(submitted, max_age=_max_age(_RULES["csrf"].lifetime))
        except BadSignature:
            return False
        if not isinstance(claims, dict):
            return False
        return hmac.compare_digest(str(claims.get("n")), cookie["n"]) and hmac.compare_digest(
            str(claims.get("p")), purpose
        )


def _max_age(lifetime: timedelta) -> int:
    """A lifetime in the whole seconds cookies and signatures count in (never negative)."""
    return max(0, int(lifetime.total_seconds()))
