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
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from fastapi import APIRouter
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


def orthanc_auth_routes(gateway: Gateway) -> APIRouter:
    router = APIRouter()

    @router.post(VALIDATE_ROUTE)
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
