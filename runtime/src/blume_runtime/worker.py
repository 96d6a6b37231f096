"""The one message-handling pipeline every worker runs.

parse envelope -> dedupe (inbox) -> validate data -> handler in one transaction with its
inbox row and outbox events -> commit -> relay outbox -> ack. Failures: malformed messages
and permanent errors are dead-lettered; anything else is retried after a delay, then
dead-lettered after the last attempt.
"""

from __future__ import annotations

import json
import time
from typing import Any

import structlog
from blume_contracts.envelope import CloudEvent, RawEvent
from pydantic import ValidationError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_runtime.db import Database, InboxEntry, utcnow
from blume_runtime.outbox import OutboxRelay
from blume_runtime.service import HandlerContext, PermanentError, Service
from blume_runtime.transport import DeadLetterCause, Delivery, OutgoingMessage


class Worker:
    def __init__(
        self, service: Service, db: Database, relay: OutboxRelay, *, max_attempts: int = 5
    ) -> None:
        self.service = service
        self._db = db
        self._relay = relay
        self._max_attempts = max_attempts
        self._log = structlog.get_logger(service.name)

    async def __call__(self, delivery: Delivery) -> None:
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(
            service=self.service.name,
            message_id=delivery.message_id,
            routing_key=delivery.routing_key,
            attempt=delivery.attempt,
        ):
            outcome = await self._process(delivery)
            self._log.info(
                "message handled",
                outcome=outcome,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )

    async def _process(self, delivery: Delivery) -> str:
        try:
            event = RawEvent.model_validate_json(delivery.body)
        except ValidationError as error:
            # The body may hold PHI: log where it broke, never what it said.
            self._log.error(
                "malformed message dead-lettered",
                problems=[
                    {"loc": ".".join(map(str, e["loc"])), "type": e["type"]}
                    for e in error.errors()[:5]
                ],
                size=len(delivery.body),
            )
            await delivery.dead_letter(DeadLetterCause.MALFORMED)
            return "dead_lettered_malformed"

        share_id = event.data.get("share_id") if isinstance(event.data, dict) else None
        with structlog.contextvars.bound_contextvars(
            event_id=event.id,
            event_type=event.type,
            correlationid=event.correlationid,
            tenantid=event.tenantid,
            share_id=share_id,
        ):
            try:
                outcome, emitted = await self._handle(event, delivery)
            except PermanentError as error:
                self._log.error("permanent failure dead-lettered", error=str(error))
                await delivery.dead_letter(DeadLetterCause.CONTRACT)
                return "dead_lettered_permanent"
            except Exception as error:  # noqa: BLE001 - any other failure is retried
                if delivery.attempt >= self._max_attempts:
                    self._log.exception("retries exhausted, dead-lettered")
                    await delivery.dead_letter(DeadLetterCause.EXHAUSTED, error_class="unexpected")
                    return "dead_lettered_exhausted"
                self._log.warning(
                    "handler failed, will retry",
                    error_type=type(error).__name__,
                    error=str(error),
                )
                await delivery.retry_later(0.0, error_class="unexpected")
                return "retry_scheduled"
            try:
                await self._relay.publish_committed(emitted)
            except Exception as error:  # noqa: BLE001 - committed: the sweep publishes later
                self._log.warning("outbox relay deferred", error_type=type(error).__name__)
            await delivery.ack()
            return outcome

    async def _handle(
        self, event: RawEvent, delivery: Delivery
    ) -> tuple[str, list[OutgoingMessage]]:
        route = self.service.route(event.type)
        if route is None:
            self._log.warning("no handler for event type; acknowledged")
            return "ignored", []
        model, handler = route
        typed: CloudEvent[Any] = event
        invalid: ValidationError | None = None
        if model is not None:
            try:
                typed = event.model_copy(update={"data": model.model_validate(event.data)})
            except ValidationError as error:
                if self.service.invalid_data_handler is None:
                    raise PermanentError(
                        f"{event.type} data breaks its contract: "
                        + ", ".join(".".join(map(str, e["loc"])) for e in error.errors()[:5])
                    ) from None
                invalid = error
        try:
            async with self._db.transaction() as session:
                if not await self._claim(session, event):
                    return "duplicate", []
                context = HandlerContext(
                    service=self.service.name,
                    event=event,
                    session=session,
                    attempt=delivery.attempt,
                    final_attempt=delivery.attempt >= self._max_attempts,
                    log=self._log,
                )
                if invalid is not None and self.service.invalid_data_handler is not None:
                    await self.service.invalid_data_handler(event, invalid, context)
                else:
                    await handler(typed, context)
                await session.flush()
        except IntegrityError:
            # A concurrent delivery of the same message committed first.
            if await self._already_processed(event):
                return "duplicate", []
            raise
        return "processed", context.emitted

    async def _claim(self, session: AsyncSession, event: RawEvent) -> bool:
        """Record the message in the inbox; False if this consumer already processed it.

        One INSERT ... ON CONFLICT DO NOTHING: a concurrent duplicate waits on the row lock
        and then finds it, so only one of them runs the handler.
        """
        insert = postgresql.insert if not self._db.is_sqlite else sqlite.insert
        statement = (
            insert(InboxEntry)
            .values(
                consumer=self.service.name,
                event_source=event.source,
                event_id=event.id,
                processed_at=utcnow(),
            )
            .on_conflict_do_nothing()
        )
        result = await session.exec(statement)
        return bool(result.rowcount)

    async def _already_processed(self, event: RawEvent) -> bool:
        async with self._db.transaction() as session:
            entry = await session.get(InboxEntry, (self.service.name, event.source, event.id))
            return entry is not None


def envelope_json(event: CloudEvent[Any]) -> bytes:
    return json.dumps(event.model_dump(mode="json")).encode()
