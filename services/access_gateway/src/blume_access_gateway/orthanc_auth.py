"""An existing viewer's Orthanc asks here whether a share's viewer ticket lets a request in.

Speaks the token-validation protocol of Orthanc's advanced authorization plugin (the
version orthanc-auth-service serves as ``POST /tokens/validate``, plugin 0.5 and later):
the plugin POSTs ``{"dicom-uid", "orthanc-id", "level", "method", "token-key",
"token-value", "server-id"}`` and expects ``{"granted": bool, "validity": seconds}``.

Granted only for a GET of the share's own study (``level`` ``study``, ``dicom-uid`` the
shared StudyInstanceUID; the plugin asks about the parent study before a series or an
instance), with a ticket the gateway signed, within the access session's lifetime after it
was issued, while the one grant check says the link is usable. ``validity`` is always 1 s:
the plugin's cache can never outlive a revocation by more than that.

The caller authenticates: the plugin sends HTTP basic credentials on each call when its
``WebServiceUsername`` and ``WebServicePassword`` are set (plugin 0.4.0 and later), and the
endpoint answers 401 to any call without the ones configured here
(``BLUME_ORTHANC_AUTH_USERNAME`` with ``BLUME_ORTHANC_AUTH_PASSWORD`` or
``BLUME_ORTHANC_AUTH_PASSWORD_FILE``), and to every call while none are configured.
"""

from __future__ import annotations

import base64
import hmac
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from blume_runtime.keyfiles import configured_secret
from fastapi import APIRouter, Depends, HTTPException, Request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from blume_access_gateway.gateway import Gateway
from blume_access_gateway.grants import LinkId, check_grant
from blume_access_gateway.tickets import InvalidTicketError, ViewerTicket, verify_ticket

VALIDATE_ROUTE: Final = "/api/v1/orthanc/tokens/validate"
VALIDITY_SECONDS: Final = 1
EXTERNAL_VIEWING: Final = timedelta(minutes=30)
"""How long after its issue a ticket keeps an external viewer in (the access session's
absolute lifetime); the grant is checked on every answer regardless."""

Level = Literal["system", "patient", "study", "series", "instance"]


class TokenValidationRequest(BaseModel):
    """The plugin's question, in its own (hyphenated) field names."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    dicom_uid: str | None = Field(default=None, alias="dicom-uid", max_length=64)
    orthanc_id: str | None = Field(default=None, alias="orthanc-id", max_length=64)
    level: Level
    method: Literal["get", "post", "put", "delete"]
    token_key: str | None = Field(default=None, alias="token-key", max_length=128)
    token_value: str | None = Field(default=None, alias="token-value", max_length=4096)
    server_id: str | None = Field(default=None, alias="server-id", max_length=128)


def _answer(granted: bool) -> JSONResponse:
    return JSONResponse(
        {"granted": granted, "validity": VALIDITY_SECONDS}, headers={"Cache-Control": "no-store"}
    )


def read_ticket(ticket: str, key: bytes, *, issuer: str, now: datetime) -> ViewerTicket:
    """A ticket the gateway signed, issued no longer than ``EXTERNAL_VIEWING`` ago."""
    try:
        issued_at = int(
            jwt.decode(ticket, OctKey.import_key(key), algorithms=["HS256"]).claims["iat"]
        )
    except (JoseError, KeyError, TypeError, ValueError) as error:
        raise InvalidTicketError(type(error).__name__) from None
    issued = datetime.fromtimestamp(issued_at, UTC)
    if not issued <= now <= issued + EXTERNAL_VIEWING:
        raise InvalidTicketError("outside the viewing window")
    # Checked as at its issue: signature, issuer, audience, and the claims a ticket has.
    return verify_ticket(ticket, key, issuer=issuer, now=issued)


def plugin_authorization(username: str | None, password: str | None) -> str | None:
    """The ``Authorization`` header the plugin sends with these credentials (None: no
    credentials configured, so no call is let in)."""
    if not username or not password:
        return None
    pair = f"{username}:{password}".encode()
    return f"Basic {base64.b64encode(pair).decode()}"


_CHALLENGE: Final = {"WWW-Authenticate": 'Basic realm="blume-orthanc-auth"'}


def orthanc_auth_routes(gateway: Gateway) -> APIRouter:
    router = APIRouter()
    config = gateway.config
    expected = plugin_authorization(
        config.orthanc_auth_username,
        configured_secret(config.orthanc_auth_password, config.orthanc_auth_password_file),
    )

    def plugin_only(request: Request) -> None:
        """Before the body is even read: the plugin's credentials, or 401."""
        presented = request.headers.get("authorization", "").encode()
        if expected is None or not hmac.compare_digest(presented, expected.encode()):
            raise HTTPException(401, "unauthorized", headers=_CHALLENGE)

    @router.post(VALIDATE_ROUTE, dependencies=[Depends(plugin_only)])
    async def validate(question: TokenValidationRequest) -> JSONResponse:
        if question.method != "get" or question.level != "study" or not question.token_value:
            return _answer(False)
        now = gateway.clock()
        try:
            ticket = read_ticket(
                question.token_value,
                gateway.keys.viewer_ticket,
                issuer=gateway.settings.public_base_url,
                now=now,
            )
        except InvalidTicketError:
            return _answer(False)
        async with gateway.events.db.transaction() as session:
            lookup = await check_grant(
                session, LinkId(ticket.link_id), now, gateway.access.freshness
            )
        link = lookup.link
        granted = (
            lookup.usable
            and link is not None
            and link.study_instance_uid is not None
            and link.study_instance_uid == question.dicom_uid
        )
        return _answer(granted)

    return router
