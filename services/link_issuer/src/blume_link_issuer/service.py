"""link_issuer: mints the secure link for an accepted external share."""

from __future__ import annotations

import uuid
from typing import Final

from blume_contracts.envelope import CloudEvent
from blume_contracts.events import ShareLinkIssued, ShareLinkRequested, ShareRevoked
from blume_contracts.link_terms import link_columns
from blume_contracts.sensitivity import fingerprint
from blume_contracts.tokens import token_hash
from blume_contracts.urls import link_url
from blume_runtime.app import serve
from blume_runtime.db import execute, fetch
from blume_runtime.sealing import Sealer
from blume_runtime.service import HandlerContext, Service
from blume_runtime.settings import Settings
from blume_runtime.tracing import current_traceparent
from sqlalchemy import Insert, Table, bindparam, insert, update

from blume_link_issuer.models import SecureLink
from blume_link_issuer.tokens import new_token

NAME = "link_issuer"

_LINKS: Final[Table] = SecureLink.__table__  # type: ignore[attr-defined]
_LINK_COLUMNS: Final = tuple(column.key for column in _LINKS.c)
# Built once and run on Core (one statement each, none of the ORM's flush): a link is written
# once when minted, and changed once, when revoked.
_INSERT: Final[Insert] = insert(_LINKS)
_REVOKE: Final = (
    update(_LINKS)
    .where(_LINKS.c.share_id == bindparam("revoked_share_id"), _LINKS.c.revoked_at.is_(None))
    .returning(_LINKS.c.link_id)
)


class LinkIssuer:
    """Mints a link per accepted external share; revokes it with the share."""

    def __init__(self, settings: Settings) -> None:
        self._sealer = Sealer.from_settings(settings)
        self._public_base_url = settings.public_base_url

    async def mint_link(self, event: CloudEvent[ShareLinkRequested], ctx: HandlerContext) -> None:
        request = event.data
        token = new_token()
        link = SecureLink(
            link_id=f"lnk_{uuid.uuid4().hex}",
            share_id=request.share_id,
            tenant_id=request.tenant_id,
            token_hash=token_hash(token),
            correlation_id=event.correlationid,
            traceparent=current_traceparent(),
            study_instance_uid=request.study_instance_uid,
            **link_columns(request),
        )
        await execute(ctx.session, _INSERT, {name: getattr(link, name) for name in _LINK_COLUMNS})
        ctx.emit(
            "share.link.issued",
            ShareLinkIssued.for_request(
                request,
                link_id=link.link_id,
                token_fingerprint=fingerprint(token),
                sealed_link=self._sealer.seal(link_url(self._public_base_url, token)),
                token_hash=link.token_hash,
            ),
        )
        ctx.log.info("link issued", link_id=link.link_id, expires_at=request.expires_at)

    async def revoke_link(self, event: CloudEvent[ShareRevoked], ctx: HandlerContext) -> None:
        revoked = event.data
        values = {
            "revoked_share_id": revoked.share_id,
            "revoked_at": revoked.revoked_at,
            "revoked_reason": revoked.reason or "revoked",
        }
        revoked_links = await fetch(ctx.session, _REVOKE, values)
        if not revoked_links:
            return  # a Blume share, or already revoked
        ctx.log.info("link revoked", link_id=revoked_links[0].link_id)


def build(settings: Settings) -> Service:
    service = Service(NAME)
    issuer = LinkIssuer(settings)
    service.handles("share.link.requested")(issuer.mint_link)
    service.handles("share.revoked")(issuer.revoke_link)
    return service


def main() -> None:
    serve([build])
