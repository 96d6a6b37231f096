"""audit_sink: appends every event on the exchange to the hash-chained audit store."""

from __future__ import annotations

from blume_contracts.envelope import RawEvent
from blume_runtime.app import serve
from blume_runtime.service import HandlerContext, Service
from blume_runtime.settings import Settings

from blume_audit_sink.chain import append

NAME = "audit_sink"


def build(settings: Settings) -> Service:
    """The worker: bound to ``#``; its handler sees raw data, so broken requests are kept too."""
    service = Service(NAME, bind_all=True)

    @service.handles_any
    async def record_event(event: RawEvent, ctx: HandlerContext) -> None:
        record = await append(ctx.session, event)
        if record is None:
            ctx.log.info("event already in the audit store")
            return
        ctx.log.info("event audited", chain_id=record.chain_id, seq=record.seq)

    return service


def main() -> None:
    serve([build])
