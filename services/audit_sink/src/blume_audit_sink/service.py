"""audit_sink: stages every event on the exchange; a sealer chains them in batches."""

from __future__ import annotations

from blume_contracts.envelope import RawEvent
from blume_runtime.app import serve
from blume_runtime.service import HandlerContext, Service
from blume_runtime.settings import Settings

from blume_audit_sink.checkpoints import Cadence
from blume_audit_sink.sealer import ChainSealer, stage
from blume_audit_sink.settings import AuditSettings, checkpoint_dir
from blume_audit_sink.signing_keys import signing_key

NAME = "audit_sink"


def build(settings: Settings, audit: AuditSettings | None = None) -> Service:
    """The worker: bound to ``#``; its handler sees raw data, so broken requests are kept too."""
    audit = audit or AuditSettings()
    service = Service(NAME, bind_all=True)
    sealer = ChainSealer(
        database_url=settings.database,
        key=signing_key(settings, audit),
        directory=checkpoint_dir(settings, audit),
        cadence=Cadence(audit.audit_checkpoint_every_events, audit.audit_checkpoint_every_seconds),
        batch_size=audit.audit_seal_batch_size,
        interval_seconds=audit.audit_seal_interval_seconds,
    )
    service.startup.append(sealer.start)
    service.resources.append(sealer.close)

    @service.handles_any
    async def record_event(event: RawEvent, ctx: HandlerContext) -> None:
        await stage(ctx.session, event)
        sealer.notice()
        ctx.log.info("event staged for the audit chain")

    return service


def main() -> None:
    serve([build])
