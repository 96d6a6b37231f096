"""The viewer ticket: how the viewer knows the gateway let this browser in.

A JWT (HS256) that lives 60 seconds and says which link and which use it is for, with a
random ``jti``; no PHI, no link token. The gateway redirects to ``<viewer_url>?ticket=...``.

The viewer checks it with the ticket key (``GatewayKeys.viewer_ticket``: derived from the
gateway secret, it cannot sign cookies or CSRF tokens), e.g. with ``verify_ticket`` below:
signature and ``alg`` HS256, ``aud`` ``blume-viewer``, ``iss`` the gateway's public base URL,
``exp`` not passed; and it accepts each ``jti`` once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

TICKET_AUDIENCE: Final = "blume-viewer"
TICKET_LIFETIME: Final = timedelta(seconds=60)
_ALGORITHM: Final = "HS256"


class InvalidTicketError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ViewerTicket:
    link_id: str
    share_id: str
    use_number: int
    ticket_id: str
    expires_at: int


def issue_ticket(
    key: bytes, *, issuer: str, link_id: str, share_id: str, use_number: int, now: datetime
) -> str:
    issued_at = int(now.timestamp())
    claims = {
        "iss": issuer,
        "aud": TICKET_AUDIENCE,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + int(TICKET_LIFETIME.total_seconds()),
        "jti": secrets.token_hex(16),
        "link_id": link_id,
        "share_id": share_id,
        "use": use_number,
    }
    return jwt.encode({"alg": _ALGORITHM, "typ": "JWT"}, claims, OctKey.import_key(key))


def verify_ticket(ticket: str, key: bytes, *, issuer: str, now: datetime) -> ViewerTicket:
    """Check a ticket as a viewer would (replay is the viewer's to refuse, by ``jti``)."""
    try:
        token = jwt.decode(ticket, OctKey.import_key(key), algorithms=[_ALGORITHM])
        jwt.JWTClaimsRegistry(
            now=int(now.timestamp()),
            leeway=0,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": TICKET_AUDIENCE},
            exp={"essential": True},
            jti={"essential": True},
        ).validate(token.claims)
        claims = token.claims
        return ViewerTicket(
            link_id=str(claims["link_id"]),
            share_id=str(claims["share_id"]),
            use_number=int(claims["use"]),
            ticket_id=str(claims["jti"]),
            expires_at=int(claims["exp"]),
        )
    except (JoseError, KeyError, TypeError, ValueError) as error:
        raise InvalidTicketError(type(error).__name__) from None
