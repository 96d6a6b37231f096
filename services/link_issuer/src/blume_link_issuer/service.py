"""link_issuer: mints the secure link for an accepted external share."""

from __future__ import annotations

import uuid

from blume_contracts.envelope import CloudEvent
from blume_contracts.events import ShareLinkIssued, ShareLinkRequested
from blume_contracts.sensitivity import fingerprint
from blume_runtime.app import serve
from blume_runtime.sealing import Sealer
from blume_runtime.service import HandlerContext, Service
from blume_runtime.settings import Settings

from blume_link_issuer.models import SecureLink
from blume_link_issuer.tokens import link_for, new_token, token_hash

NAME = "link_issuer"


def build(settings: Settings) -> Service:
    service = Service(NAME)
    sealer = Sealer.from_settings(settings)

    @service.handles("share.link.requested")
    async def mint_link(event: CloudEvent[ShareLinkRequested], ctx: HandlerContext) -> None:
        request = event.data
        token = new_token()
        link = SecureLink(
            link_id=f"lnk_{uuid.uuid4().hex}",
            share_id=request.share_id,
            tenant_id=request.tenant_id,
            token_hash=token_hash(token),
            recipient_email=request.recipient.email,
            study_instance_uid=request.study_instance_uid,
            expires_at=request.expires_at,
        )
        ctx.session.add(link)
        ctx.emit(
            "share.link.issued",
            ShareLinkIssued(
                share_id=request.share_id,
                link_id=link.link_id,
                token_fingerprint=fingerprint(token),
                sealed_link=sealer.seal(link_for(settings.public_base_url, token)),
                expires_at=request.expires_at,
                recipient=request.recipient,
                sender=request.sender,
                organisation=request.organisation,
                message=request.message,
                locale=request.locale,
            ),
        )
        ctx.log.info("link issued", link_id=link.link_id, expires_at=request.expires_at)

    return service


def main() -> None:
    serve([build])
