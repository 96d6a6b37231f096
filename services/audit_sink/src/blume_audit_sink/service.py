"""audit_sink: records what reaches it over the exchange; a sealer chains what is staged.

Every service stages its own events for the audit store in the transaction that emits them
(``blume_runtime.unit_of_work.stage_for_audit``), and a consumer that refuses a forged event
stages its security record (``security.untrusted_producer``, chain ``_security``). What the
sink consumes is what no producer of ours stages: outside requests, recorded with their
verified publisher as requester, the operators' tools' events, and whatever the exchange
could route nowhere else. Where some service's database is not the sink's
(``BLUME_AUDIT_COPIES``), the sink binds every type and records each from its copy, as before.
"""

from __future__ import annotations

from typing import Final

from blume_contracts.envelope import RawEvent
from blume_runtime.app import serve
from blume_runtime.db import STAGED_AUDIT
from blume_runtime.service import HandlerContext, Service
from blume_runtime.settings import Settings
from blume_runtime.unit_of_work import AUDITED_FROM_THE_EXCHANGE, OUTSIDE_TYPES, stage_for_audit
from pydantic import ValidationError

from blume_audit_sink.checkpoints import Cadence
from blume_audit_sink.models import SCHEMA
from blume_audit_sink.sealer import ChainSealer
from blume_audit_sink.settings import AuditSettings, checkpoint_dir
from blume_audit_sink.signing_keys import signing_key

NAME: Final = SCHEMA


async def record_event(event: RawEvent, ctx: HandlerContext) -> None:
    """Stage ``event`` for the sealer in the transaction of its inbox row. A request the
    runtime staged already, as every consumer of requests does (``blume_runtime.worker``)."""
    if STAGED_AUDIT not in ctx.session.info:
        raise RuntimeError("the audit sink's own database must stage audit rows")
    if event.type not in OUTSIDE_TYPES:
        stage_for_audit(ctx.session, event, broker_user=ctx.producer)


async def record_broken_request(
    _event: RawEvent, _error: ValidationError, _ctx: HandlerContext
) -> None:
    """Kept under the stand-in envelope the dispatcher's rejection also carries: the
    runtime staged that stand-in as it claimed it, as for every request."""


def build(settings: Settings, audit: AuditSettings | None = None) -> Service:
    """The worker: bound to the types no producer of ours stages (``#`` with
    ``BLUME_AUDIT_COPIES``), and to what the exchange routes nowhere else; its handler sees
    raw data, so broken requests are kept too."""
    audit = audit or AuditSettings()
    service = Service(
        NAME,
        bind_all=settings.audit_copies,
        extra_keys=AUDITED_FROM_THE_EXCHANGE,
        binds_unrouted=True,
    )
    service.components.append(
        ChainSealer(
            database_url=settings.service_database(NAME),
            key=signing_key(settings, audit),
            directory=checkpoint_dir(settings, audit),
            cadence=Cadence(
                audit.audit_checkpoint_every_events, audit.audit_checkpoint_every_seconds
            ),
            batch_size=audit.audit_seal_batch_size,
            interval_seconds=audit.audit_seal_interval_seconds,
        )
    )
    service.handles_any(record_event)
    service.on_invalid_envelope("study.send.requested")(record_broken_request)
    return service


def main() -> None:
    serve([build])
