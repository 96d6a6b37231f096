"""The one message-handling pipeline every worker runs.

Every delivery reaches exactly one decision (ack, retry later, dead-letter) and exactly one
log line, ``delivery settled``, saying which and why; never the body. In order:

1. **intake**, before parsing (``blume_runtime.intake``): content encoding, content type, size,
   UTF-8, a JSON object; else dead-letter, cause ``malformed``;
2. **the envelope**: parsed strictly once; if that fails, leniently (specversion, id,
   source and type), else ``malformed``;
3. **the producer verdict** (``blume_runtime.identity``); else ``untrusted_producer``, after
   the service's ``on_untrusted`` hook has recorded it;
4. **a strict envelope**, or else the service's ``on_invalid_envelope`` answer for that
   type, or ``malformed``;
5. **dedupe and handle**: the inbox row, the handler and its outbox events in one
   transaction, bounded by ``BLUME_HANDLER_TIMEOUT_SECONDS``; commit, relay, ack.
   **Group commit** (``blume_runtime.group_commit``): a delivery that finds no transaction of
   this worker running runs alone at once, as described. Deliveries that reach this step
   while one runs wait for it, then go together (up to the prefetch): one transaction claims
   all their inbox rows in one INSERT, runs each claimed handler in turn on the shared
   session (each with its own context, staged events, ids, log fields and trace span),
   inserts all their outbox rows in one statement and commits once, within one handler
   timeout; then each delivery goes on alone (its own relay, decision, settlement and line).
   A later handler of a batch sees an earlier one's writes, as it would one after the other.
   If anything in a batch fails, the batch is rolled back and each of its deliveries runs
   again alone, so that every failure is classified for the delivery it belongs to. A
   service whose handlers have effects outside the database opts out
   (``Service(group_commit=False)``: the notifier, whose emails a rerun would repeat). Each
   delivery still asks for its own ack; the RabbitMQ transport sends the acks asked for
   together as one ``multiple=True`` frame where no lower delivery is unsettled
   (``blume_runtime.acks``);
6. **failures**: a contract breach is dead-lettered (``contract``); anything else is put in an
   error class and retried within that class's budget (``blume_runtime.retry``), the first
   retry per class announced through the service's ``on_retry_scheduled`` hook; past the
   budget, the ``on_exhausted`` hook may answer it, else it is dead-lettered (``exhausted``).

Over 400 lines on purpose: these steps are one pipeline, and kept in one class they read in
the order a delivery goes through them.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import structlog
from blume_contracts.envelope import CloudEvent, LenientEnvelope, RawEvent, usable_envelope
from blume_contracts.registry import EVENTS
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_runtime import metrics, tracing
from blume_runtime.db import Database, InboxEntry, InboxKey, flush_pending, utcnow
from blume_runtime.group_commit import RUN_ALONE, GroupCommit, Signal
from blume_runtime.identity import ProducerRule, Verdict
from blume_runtime.intake import (
    Decision,
    failure_fields,
    read_document,
    validated,
    validation_summary,
)
from blume_runtime.logging import bounded, log_context, scrub_text
from blume_runtime.outbox import OutboxRelay
from blume_runtime.retry import (
    UNEXPECTED,
    Exhausted,
    Retry,
    RetryPolicy,
    classify,
    first_retry_of_class,
)
from blume_runtime.service import (
    HandlerContext,
    PermanentError,
    RefusedEvent,
    RetryNotice,
    Service,
    TransientError,
)
from blume_runtime.settings import Settings
from blume_runtime.transport import DeadLetterCause, Delivery, OutgoingMessage
from blume_runtime.unit_of_work import OUTSIDE_TYPES, publish_committed, stage_for_audit

Invoke = Callable[[HandlerContext], Awaitable[None]]
Emitted = list[OutgoingMessage] | None
"""What a claimed and handled delivery staged; None when the inbox said it was a duplicate."""


@dataclass(frozen=True, slots=True)
class _Handling:
    """One delivery's claim and handler, as the group commit queues it."""

    event: RawEvent
    delivery: Delivery
    invoke: Invoke
    verdict: Verdict
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    """The delivery's log fields and trace span: its handler runs in them, even in a batch."""

    @property
    def key(self) -> InboxKey:
        return (self.event.source, self.event.id)


def _stage_request(session: AsyncSession, event: RawEvent, verdict: Verdict) -> None:
    """Stage an outside request for the audit store in the transaction that claims it, with
    its verified publisher: its record then precedes those of the events it causes, which
    inherit the patient and the people from it. Other events are staged by their producers."""
    if event.type in OUTSIDE_TYPES:
        stage_for_audit(session, event, broker_user=verdict.requester)


async def _call(invoke: Invoke, ctx: HandlerContext) -> None:
    await invoke(ctx)


class _NotAnswered(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Rolls back an ``on_exhausted`` transaction whose hook declined to answer."""


class Worker:
    def __init__(
        self,
        service: Service,
        db: Database,
        relay: OutboxRelay,
        settings: Settings | None = None,
        *,
        retry: RetryPolicy | None = None,
        producers: ProducerRule | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        settings = settings or Settings()
        self.service = service
        self._db = db
        self._relay = relay
        self._retry = retry or RetryPolicy.from_settings(settings)
        self._producers = producers or ProducerRule.from_settings(settings)
        self._clock = clock
        self._timeout = settings.handler_timeout_seconds
        self._max_bytes = settings.max_message_bytes
        self._log = structlog.get_logger(service.name)
        self._counted: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._group: GroupCommit[_Handling, Emitted] | None = None
        if service.group_commit:
            self._group = GroupCommit(self._alone, self._together, settings.prefetch)

    async def __call__(self, delivery: Delivery) -> None:
        started = time.perf_counter()
        line: dict[str, Any] = {
            "attempt": delivery.attempt,
            "size": len(delivery.body),
            "content_type": bounded(delivery.content_type, 64),
            "producer": bounded(delivery.producer, 64),
        }
        with log_context(
            service=self.service.name,
            message_id=bounded(delivery.message_id),
            routing_key=bounded(delivery.routing_key),
        ):
            try:
                decision = await self._decide(delivery, line)
            except asyncio.CancelledError:
                self._log.warning("delivery interrupted; the broker redelivers it", **line)
                raise
            except Exception as error:  # noqa: BLE001 - the worker's own failures still settle
                decision = self._worker_failed(delivery, error, line)
            duration = time.perf_counter() - started
            line.update(decision.fields(), duration_ms=round(duration * 1000, 2))
            # A failure to settle propagates: the transport's ``deliver`` gives the message
            # back to the broker and writes the one line for it.
            await decision.settle(delivery)
            self._log.log(decision.level, "delivery settled", **line)
            self._count(decision, line.get("event_type"), duration)

    def _count(self, decision: Decision, event_type: str | None, duration: float) -> None:
        # Label values must stay few: attacker-chosen types are counted as "other".
        label = event_type if event_type in EVENTS else "other"
        name = self.service.name
        key = (label, decision.decision)
        children = self._counted.get(key)
        if children is None:  # a few per worker (types x decisions): looked up once each
            children = self._counted[key] = (
                metrics.MESSAGES_HANDLED.labels(name, label, decision.decision),
                metrics.HANDLER_DURATION.labels(name, label),
            )
        handled, durations = children
        handled.inc()
        durations.observe(duration)
        if decision.error_class is not None and decision.decision == "retry":
            metrics.RETRIES.labels(name, decision.error_class).inc()
        if decision.cause is not None:
            metrics.DEAD_LETTERS.labels(name, decision.cause.value).inc()

    async def _decide(self, delivery: Delivery, line: dict[str, Any]) -> Decision:
        document, problem = read_document(delivery, self._max_bytes)
        if document is None:
            return Decision.dead_letter(DeadLetterCause.MALFORMED, problem=problem)
        # Strict first: whatever it accepts the lenient envelope accepts too, so a valid
        # event (nearly every one) is validated once; the verdict still comes before use.
        event, invalid = validated(RawEvent, document)
        if event is not None:
            lenient = LenientEnvelope.model_construct(
                id=event.id, source=event.source, type=event.type
            )
        else:
            try:
                lenient = LenientEnvelope.model_validate(document)
            except ValidationError as error:
                problem = validation_summary(error)
                return Decision.dead_letter(DeadLetterCause.MALFORMED, problem=problem)
        line.update(event_type=lenient.type, event_id=bounded(lenient.id))
        verdict = self._producers.verdict(lenient.type, delivery.producer)
        if not verdict.trusted:
            return await self._refuse(delivery, document, lenient, verdict)
        if invalid is not None:
            answer = self.service.invalid_envelope_handlers.get(lenient.type)
            if answer is None:
                problem = validation_summary(invalid)
                return Decision.dead_letter(DeadLetterCause.MALFORMED, problem=problem)
            stand_in = usable_envelope(document, lenient)
            line["invalid_envelope"] = validation_summary(invalid)
            invoke = partial(answer, stand_in, invalid)
            return await self._run(stand_in, delivery, invoke, verdict, "invalid_envelope")
        assert event is not None
        return await self._handle(event, delivery, verdict)

    async def _handle(self, event: RawEvent, delivery: Delivery, verdict: Verdict) -> Decision:
        route = self.service.route(event.type)
        if route is None:
            return Decision.ack("ignored")
        model, handler = route
        if model is None:
            return await self._run(event, delivery, partial(handler, event), verdict)
        data, invalid = validated(model, event.data)
        if invalid is not None:
            answer = self.service.invalid_data_handler
            if answer is None:
                problem = validation_summary(invalid)
                return Decision.dead_letter(DeadLetterCause.CONTRACT, problem=problem)
            invoke = partial(answer, event, invalid)
            return await self._run(event, delivery, invoke, verdict, "invalid_data")
        typed: CloudEvent[Any] = event.model_copy(update={"data": data})
        return await self._run(typed, delivery, partial(handler, typed), verdict)

    async def _run(
        self,
        event: RawEvent,
        delivery: Delivery,
        invoke: Invoke,
        verdict: Verdict,
        answered: str = "processed",
    ) -> Decision:
        share_id = event.data.get("share_id") if isinstance(event.data, dict) else None
        share_id = getattr(event.data, "share_id", share_id)
        parent = tracing.context_of(event.traceparent) or tracing.derived_context(
            event.source, event.id
        )
        attributes = {
            "messaging.system": "rabbitmq",
            "messaging.destination.name": self.service.queue.name,
            "messaging.message.id": event.id,
            "cloudevents.event_type": event.type,
            "blume.service": self.service.name,
        }
        with (
            tracing.handling(f"{self.service.name} process {event.type}", parent, attributes),
            log_context(
                event_id=event.id,
                event_type=event.type,
                correlationid=event.correlationid,
                tenantid=event.tenantid,
                share_id=bounded(share_id, 64),
            ),
        ):
            try:
                handling = _Handling(event, delivery, invoke, verdict)
                if self._group is None:
                    emitted = await self._alone(handling)
                else:
                    emitted = await self._group.submit(handling)
            except PermanentError as error:
                detail = bounded(scrub_text(str(error)), 300)
                return Decision.dead_letter(DeadLetterCause.CONTRACT, error=detail)
            except Exception as error:  # noqa: BLE001 - classified, then retried or dead-lettered
                return await self._failed(event, delivery, error)
        if emitted is None:
            return Decision.ack("duplicate")
        relay = await self._publish(emitted)
        return Decision.ack(answered, **relay)

    async def _alone(self, handling: _Handling) -> Emitted:
        """Claim and handle in a transaction of its own, within the handler timeout."""
        async with asyncio.timeout(self._timeout):
            return await self._transaction(
                handling.event, handling.delivery, handling.invoke, handling.verdict
            )

    async def _transaction(
        self, event: RawEvent, delivery: Delivery, invoke: Invoke, verdict: Verdict
    ) -> Emitted:
        """Claim and handle in one transaction; None if this consumer already processed it."""
        try:
            async with self._db.transaction() as session:
                if not await self._claim(session, event):
                    return None
                _stage_request(session, event, verdict)
                ctx = self._context(event, session, delivery, verdict)
                await invoke(ctx)
                await flush_pending(session)
        except IntegrityError:
            # A concurrent delivery of the same message committed first.
            if await self._already_processed(event):
                return None
            raise
        return ctx.staged

    async def _together(self, batch: Sequence[_Handling]) -> list[Emitted | Signal]:
        """Claim and handle deliveries that queued up in one transaction, one commit.

        Each handler runs in turn on the shared session, with its own context (its staged
        events and their ids, exactly as alone) and in its own delivery's log fields and
        trace span. If anything fails, the whole batch is rolled back and each delivery is
        answered ``RUN_ALONE``: run again in a transaction of its own, its failure its own.
        """
        answers: list[Emitted | Signal] = []
        try:
            async with asyncio.timeout(self._timeout), self._db.transaction() as session:
                keys = [handling.key for handling in batch]
                claimed = await self._db.claim(session, self.service.name, keys)
                for handling in batch:
                    if handling.key not in claimed:  # processed before, or earlier in it
                        answers.append(None)
                        continue
                    claimed.discard(handling.key)
                    _stage_request(session, handling.event, handling.verdict)
                    ctx = self._context(
                        handling.event, session, handling.delivery, handling.verdict
                    )
                    await asyncio.create_task(_call(handling.invoke, ctx), context=handling.context)
                    answers.append(ctx.staged)
                await flush_pending(session)
        except Exception as error:  # noqa: BLE001 - each delivery is then run alone
            self._log.info(
                "batch rolled back; its deliveries run alone",
                batch_size=len(batch),
                error_type=type(error).__name__,
            )
            return [RUN_ALONE] * len(batch)
        return answers

    def _context(
        self,
        event: RawEvent,
        session: AsyncSession,
        delivery: Delivery,
        verdict: Verdict,
        scope: str = "",
    ) -> HandlerContext:
        return HandlerContext(
            service=self.service.name,
            origin=event,
            session=session,
            attempt=delivery.attempt,
            log=self._log,
            producer=verdict.requester,
            scope=scope,
        )

    async def _publish(self, emitted: list[OutgoingMessage]) -> dict[str, Any]:
        failed = await publish_committed(self._relay, emitted)
        return {} if failed is None else {"relay_deferred": failed}

    def _plan(
        self, delivery: Delivery, error: Exception, error_class: str | None = None
    ) -> tuple[str, Retry | Exhausted, dict[str, Any]]:
        """The failure's class, what its budget allows now, and how the line describes it."""
        error_class = error_class or classify(error)
        plan = self._retry.plan(
            error_class=error_class,
            attempt=delivery.attempt,
            first_failed_at=delivery.first_failed_at,
            now=self._clock(),
            deadline=error.deadline if isinstance(error, TransientError) else None,
        )
        return error_class, plan, failure_fields(error, error_class == UNEXPECTED)

    async def _failed(self, event: RawEvent, delivery: Delivery, error: Exception) -> Decision:
        """A transient or unexpected failure: retry within the class's budget, or give up."""
        error_class, plan, failure = self._plan(delivery, error)
        if isinstance(plan, Exhausted):
            if await self._answer_exhausted(event, delivery, error_class):
                return Decision.ack("answered_after_budget", error_class=error_class, **failure)
            return Decision.dead_letter(
                DeadLetterCause.EXHAUSTED, error_class=error_class, budget=plan.budget, **failure
            )
        notice = RetryNotice(error_class, plan.first_failed_at, plan.next_attempt_at)
        if first_retry_of_class(delivery, error_class):
            failure.update(await self._announce(event, delivery, notice))
        return Decision.retry(plan.delay_seconds, error_class, **failure)

    def _worker_failed(
        self, delivery: Delivery, error: Exception, line: dict[str, Any]
    ) -> Decision:
        """The worker's own code failed: retried as ``unexpected``, then dead-lettered."""
        line["worker_error"] = True
        _, plan, failure = self._plan(delivery, error, UNEXPECTED)
        if isinstance(plan, Exhausted):
            return Decision.dead_letter(
                DeadLetterCause.EXHAUSTED, error_class=UNEXPECTED, **failure
            )
        return Decision.retry(plan.delay_seconds, UNEXPECTED, **failure)

    async def _announce(
        self, event: RawEvent, delivery: Delivery, notice: RetryNotice
    ) -> dict[str, Any]:
        """Run the service's retry hook in its own transaction; a failure only gets logged."""
        hook = self.service.retry_hook
        if hook is None:
            return {}
        verdict = Verdict(None)
        try:
            async with asyncio.timeout(self._timeout), self._db.transaction() as session:
                ctx = self._context(
                    event, session, delivery, verdict, scope=f"retry:{notice.error_class}"
                )
                await hook(event, notice, ctx)
                await flush_pending(session)
        except IntegrityError:
            return {"retry_notice": "already_recorded"}
        except Exception as error:  # noqa: BLE001 - the retry itself must still be scheduled
            return {"retry_notice": "failed", "retry_notice_error": type(error).__name__}
        return {"retry_notice": "recorded", **await self._publish(ctx.staged)}

    async def _answer_exhausted(
        self, event: RawEvent, delivery: Delivery, error_class: str
    ) -> bool:
        """Let the service answer a message whose budget ended; recorded as processed."""
        hook = self.service.exhausted_hook
        if hook is None:
            return False
        try:
            async with asyncio.timeout(self._timeout), self._db.transaction() as session:
                if not await self._claim(session, event):
                    return True
                verdict = self._producers.verdict(event.type, delivery.producer)
                _stage_request(session, event, verdict)
                ctx = self._context(event, session, delivery, Verdict(None))
                if not await hook(event, error_class, ctx):
                    raise _NotAnswered
                await flush_pending(session)
        except Exception:  # noqa: BLE001 - not answered: dead-lettered, for ops to replay
            return False
        await self._publish(ctx.staged)
        return True

    async def _refuse(
        self,
        delivery: Delivery,
        document: dict[str, Any],
        lenient: LenientEnvelope,
        verdict: Verdict,
    ) -> Decision:
        """An event from an untrusted producer: no effect, a security record, dead-lettered.

        The security record is staged here, in the refusal's own transaction, by whichever
        consumer refused the event: the audit sink no longer receives a copy of every event.
        Its id derives from the claims and the publisher, so the refusals of one message by
        several consumers (and by the sink) are one record."""
        assert verdict.refusal is not None
        refused = RefusedEvent(
            event_type=lenient.type,
            event_id=lenient.id,
            source=lenient.source,
            tenantid=usable_envelope(document, lenient).tenantid,
            producer=bounded(delivery.producer, 256),
            refusal=verdict.refusal.value,
        )
        fields: dict[str, Any] = {"refusal": verdict.refusal.value}
        hook = self.service.untrusted_hook
        # Resolved, not read: a database that finds out before its first transaction would
        # otherwise read as not staging when the first thing it sees is a forgery.
        if hook is not None or await self._db.resolve_audit_staging():
            try:
                async with asyncio.timeout(self._timeout), self._db.transaction() as session:
                    stage_for_audit(session, refused.security_record())
                    if hook is not None:
                        await hook(refused, session)
            except Exception as error:  # noqa: BLE001 - the record must not be lost: retry
                error_class, plan, failure = self._plan(delivery, error)
                if not isinstance(plan, Exhausted):
                    return Decision.retry(plan.delay_seconds, error_class, **fields, **failure)
                fields.update(security_record="failed", **failure)
        return Decision.dead_letter(DeadLetterCause.UNTRUSTED_PRODUCER, **fields)

    async def _claim(self, session: AsyncSession, event: RawEvent) -> bool:
        """Record the message in the inbox; False if this consumer already processed it."""
        return bool(await self._db.claim(session, self.service.name, [(event.source, event.id)]))

    async def _already_processed(self, event: RawEvent) -> bool:
        async with self._db.transaction() as session:
            entry = await session.get(InboxEntry, (self.service.name, event.source, event.id))
            return entry is not None
