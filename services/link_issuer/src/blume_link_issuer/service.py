"""link_issuer: mints the secure link for an accepted external share."""

from __future__ import annotations

import uuid

from blume_contracts.envelope import CloudEvent
from blume_contracts.events import ShareLinkIssued, ShareLinkRequested, ShareRevoked
from blume_contracts.link_terms import link_columns
from blume_contracts.sensitivity import fingerprint
from blume_contracts.tokens import token_hash
from blume_contracts.urls import link_url
from blume_runtime.app import serve
from blume_runtime.sealing import Sealer
from blume_runtime.service import HandlerContext, Service
from blume_runtime.settings import Settings
from blume_runtime.tracing import current_traceparent
from sqlmodel import col, select

from blume_link_issuer.models import SecureLink
from blume_link_issuer.tokens import new_token

NAME = "link_issuer"


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
        ctx.session.add(link)
        ctx.emit(
            "share.link.issued",
            ShareLinkIssued(
                share_id=request.share_id,
                link_id=link.link_id,
                token_fingerprint=fingerprint(token),
                sealed_link=self._sealer.seal(link_url(self._public_base_url, token)),
                expires_at=request.expires_at,
                recipient=request.recipient,
                sender=request.sender,
                organisation=request.organisation,
                message=request.message,
                locale=request.locale,
                token_hash=link.token_hash,
                recipient_auth=request.recipient_auth,
                max_uses=request.max_uses,
                study_instance_uid=request.study_instance_uid,
            ),
        )
        ctx.log.info("link issued", link_id=link.link_id, expires_at=request.expires_at)

    async def revoke_link(self, event: CloudEvent[ShareRevoked], ctx: HandlerContext) -> None:
        link = (
            await ctx.session.exec(
                select(SecureLink).where(col(SecureLink.share_id) == event.data.share_id)
            )
        ).first()
        if link is None or link.revoked_at is not None:
            return  # a Blume share, or already revoked
        link.revoked_at = event.data.revoked_at
        link.revoked_reason = event.data.reason or "revoked"
        ctx.session.add(link)
        ctx.log.info("link revoked", link_id=link.link_id)


def build(settings: Settings) -> Service:
    service = Service(NAME)
    issuer = LinkIssuer(settings)
    service.handles("share.link.requested")(issuer.mint_link)
    service.handles("share.revoked")(issuer.revoke_link)
    return service


def main() -> None:
    serve([build])
