"""The gateway's projections: what it knows of other services' state, from their events.

Each function applies one event to the gateway's own tables, idempotently (the runtime's
inbox already drops redeliveries; applying twice still changes nothing). ``build`` makes the
gateway's worker: its queue ``blume.share.access_gateway`` is bound by exactly the types the
contract registry names the gateway a consumer of.
"""

from __future__ import annotations

from typing import Any, Final

from blume_contracts.envelope import CloudEvent
from blume_contracts.events import (
    PatientAccountUpdated,
    ShareBlumePublished,
    ShareLinkIssued,
    ShareRevoked,
)
from blume_contracts.link_terms import link_columns
from blume_contracts.projections import keep_newest
from blume_contracts.registry import consumed_by
from blume_runtime.service import Handler, HandlerContext, Service
from blume_runtime.settings import Settings
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_access_gateway.freshness import Freshness, FreshnessCheck
from blume_access_gateway.models import (
    ProjectedAccount,
    ProjectedEntry,
    ProjectedLink,
    ProjectedRevocation,
)
from blume_access_gateway.settings import GatewaySettings
from blume_access_gateway.share_status import STATUS_EVENTS, apply_status

NAME: Final = "access_gateway"


async def apply_link_issued(session: AsyncSession, event: CloudEvent[ShareLinkIssued]) -> bool:
    """Record the link; False when the event predates the fields the gateway needs."""
    issued = event.data
    if issued.token_hash is None:
        return False
    if await session.get(ProjectedLink, issued.link_id) is not None:
        return True
    # The sender's message (PHI): the link page shows it only once access is granted.
    message = issued.message.strip() if issued.message else ""
    link = ProjectedLink(
        link_id=issued.link_id,
        share_id=issued.share_id,
        tenant_id=event.tenantid,
        token_hash=issued.token_hash,
        correlation_id=event.correlationid,
        message=message or None,
        traceparent=event.traceparent,
        **link_columns(issued),
        study_instance_uid=issued.study_instance_uid,
    )
    session.add(link)
    return True


async def apply_revoked(session: AsyncSession, event: CloudEvent[ShareRevoked]) -> None:
    if await session.get(ProjectedRevocation, event.data.share_id) is None:
        session.add(
            ProjectedRevocation(share_id=event.data.share_id, revoked_at=event.data.revoked_at)
        )


async def apply_account(session: AsyncSession, event: CloudEvent[PatientAccountUpdated]) -> None:
    """Keep the newest state of the account: an older copy arriving late changes nothing."""
    update = event.data
    state = update.model_dump(
        include={"blume_patient_id", "tenant_id", "locale", "withhold_portal", "updated_at"}
    )
    state["active"] = update.status == "active"
    await keep_newest(session, ProjectedAccount, update.blume_patient_id, state)


async def apply_published(session: AsyncSession, event: CloudEvent[ShareBlumePublished]) -> None:
    """Record the entry; the share that first published it is the one whose revocation
    hides it (a later share of the same study only announces it again)."""
    published = event.data
    entry = await session.get(ProjectedEntry, published.entry_id)
    if entry is not None and not published.newly_published:
        return
    study = published.study
    entry = entry or ProjectedEntry(
        entry_id=published.entry_id,
        blume_patient_id=published.blume_patient_id,
        tenant_id=event.tenantid,
        share_id=published.share_id,
        correlation_id=event.correlationid,
    )
    entry.share_id = published.share_id
    entry.correlation_id = event.correlationid
    entry.study_date = study.study_date if study else None
    entry.modalities = list(study.modalities) if study else []
    entry.description = study.description if study else None
    entry.traceparent = event.traceparent
    entry.study_instance_uid = published.study_instance_uid or entry.study_instance_uid
    session.add(entry)


def build(settings: Settings, freshness: FreshnessCheck | None = None) -> Service:
    """The gateway's worker; ``freshness`` hears of every event applied (for its lag)."""
    tracker = freshness or Freshness(GatewaySettings().projection_max_lag_seconds)
    service = Service(NAME)

    def projecting(apply: Any) -> Handler:
        async def handle(event: CloudEvent[Any], ctx: HandlerContext) -> None:
            applied = await apply(ctx.session, event) if apply is not None else None
            if event.type in STATUS_EVENTS:
                await apply_status(ctx.session, event)
            if applied is False:
                ctx.log.warning("link event without the gateway's fields; not projected")
            # Noted before the commit, which follows at once: the lag is measured in seconds.
            tracker.applied(event.time)

        return handle

    appliers = {
        "share.link.issued": apply_link_issued,
        "share.revoked": apply_revoked,
        "patient.account.updated": apply_account,
        "share.blume.published": apply_published,
    }
    for event_type in consumed_by(NAME):
        # Events only the share status needs have no other projection.
        service.handles(event_type)(projecting(appliers.get(event_type)))
    return service
