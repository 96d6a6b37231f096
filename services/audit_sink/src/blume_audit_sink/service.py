"""audit_sink: stages every event on the exchange; a sealer chains them in batches.

An event refused for its producer is never recorded as what it claims to be: a security
record (``security.untrusted_producer``, chain ``_security``) says what it claimed and who
published it. An outside request is recorded with its verified publisher as requester.
"""

from __future__ import annotations

from typing import Final

from blume_contracts import audit_entry
from blume_contracts.envelope import RawEvent
from blume_runtime.app import serve
from blume_runtime.service import HandlerContext, RefusedEvent, Service
from blume_runtime.settings import Settings
from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_audit_sink.checkpoints import Cadence
from blume_audit_sink.models import SCHEMA
from blume_audit_sink.sealer import ChainSealer, stage
from blume_audit_sink.settings import AuditSettings, checkpoint_dir
from blume_audit_sink.signing_keys import signing_key

NAME: Final = SCHEMA


def security_record(refused: RefusedEvent) -> RawEvent:
    """What the store keeps of an event refused for its producer (``audit_entry``)."""
    return audit_entry.security_record(
        event_type=refused.event_type,
        event_id=refused.event_id,
        source=refused.source,
        tenantid=refused.tenantid,
        producer=refused.producer,
        refusal=refused.refusal,
    )


class AuditSink:
    """Stages what it is given for the sealer, and wakes it when the staging commits."""

    def __init__(self, sealer: ChainSealer) -> None:
        self._sealer = sealer

    async def record_event(self, event: RawEvent, ctx: HandlerContext) -> None:
        stage(ctx.session, event, broker_user=ctx.producer)
        self._sealer.notice_on_commit(ctx.session)

    async def record_broken_request(
        self, event: RawEvent, _error: ValidationError, ctx: HandlerContext
    ) -> None:
        """Kept under the stand-in envelope the dispatcher's rejection also carries."""
        await self.record_event(event, ctx)

    async def record_refusal(self, refused: RefusedEvent, session: AsyncSession) -> None:
        stage(session, security_record(refused), broker_user=refused.producer)
        self._sealer.notice_on_commit(session)


def build(settings: Settings, audit: AuditSettings | None = None) -> Service:
    """The worker: bound to ``#``; its handler sees raw data, so broken requests are kept too."""
    audit = audit or AuditSettings()
    service = Service(NAME, bind_all=True)
    sealer = ChainSealer(
        database_url=settings.service_database(NAME),
        key=signing_key(settings, audit),
        directory=checkpoint_dir(settings, audit),
        cadence=Cadence(audit.audit_checkpoint_every_events, audit.audit_checkpoint_every_seconds),
        batch_size=audit.audit_seal_batch_size,
        interval_seconds=audit.audit_seal_interval_seconds,
    )
    service.components.append(sealer)
    sink = AuditSink(sealer)
    service.handles_any(sink.record_event)
    service.on_invalid_envelope("study.send.requested")(sink.record_broken_request)
    service.on_untrusted(sink.record_refusal)
    return service


def main() -> None:
    serve([build])
