"""How a worker declares itself: a name, the event types it handles, thin handler functions."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from blume_contracts.envelope import CloudEvent, RawEvent, now
from blume_contracts.registry import spec_for
from pydantic import BaseModel, ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_runtime.db import OutboxMessage
from blume_runtime.topology import QueueSpec
from blume_runtime.transport import OutgoingMessage

_EVENT_IDS: Final = uuid.UUID("5f0d0e36-47c1-4c4f-9a53-4a3b8e0f2b61")


class PermanentError(Exception):
    """The message can never succeed: dead-letter it (cause ``contract``) without retrying."""


_ERROR_CLASS: Final = re.compile(r"^[a-z_]{1,64}$")


class TransientError(Exception):
    """The message may succeed later (a dependency is down): retry after a delay.

    ``error_class`` names what failed (``smtp_unavailable``, ...): it picks the retry budget
    (``blume_runtime.retry``) and is what ops see in logs, metrics and the DLQ. ``deadline``
    ends the budget earlier: past it, retrying is pointless (a sign-in code that expired).
    """

    def __init__(
        self, error_class: str, deadline: datetime | None = None, *, detail: str = ""
    ) -> None:
        if not _ERROR_CLASS.match(error_class):
            raise ValueError(f"error class must match {_ERROR_CLASS.pattern}")
        super().__init__(detail or error_class)
        self.error_class = error_class
        self.deadline = deadline
        self.detail = detail


@dataclass(slots=True)
class HandlerContext:
    """What a handler gets besides its event: the transaction and a way to emit events."""

    service: str
    event: RawEvent
    session: AsyncSession
    attempt: int
    log: Any
    producer: str | None = None
    """The verified broker user that published the event (None if the broker named none)."""
    scope: str = ""
    """Set for hooks that run beside the handler (a retry notice), so their events get ids
    of their own, still stable when the hook runs again."""
    emitted: list[OutgoingMessage] = field(default_factory=list)
    """What this handler staged, in order: published from memory once committed."""

    def emit(self, event_type: str, data: BaseModel) -> CloudEvent[Any]:
        """Queue an event in the outbox, in this transaction; it is published after commit.

        The id is derived from the event being handled, so a handler that runs again after a
        rolled-back attempt emits the same ids, and consumers dedupe them.
        """
        seed = (
            f"{self.service}|{self.event.source}|{self.event.id}|{event_type}|{len(self.emitted)}"
        )
        if self.scope:
            seed = f"{seed}|{self.scope}"
        outgoing = stage_event(
            self.session,
            event_type,
            data,
            producer=self.service,
            tenantid=self.event.tenantid,
            correlationid=self.event.correlationid,
            event_id=str(uuid.uuid5(_EVENT_IDS, seed)),
        )
        self.emitted.append(outbox_message(outgoing))
        return outgoing


def stage_event(
    session: AsyncSession,
    event_type: str,
    data: BaseModel,
    *,
    producer: str,
    tenantid: str,
    correlationid: str,
    event_id: str | None = None,
) -> CloudEvent[Any]:
    """Write an event to the outbox in ``session``'s transaction (published after commit).

    Handlers use ``HandlerContext.emit``; producers that are not handlers (the web gateway,
    the CLI) call this directly, then ``OutboxRelay.relay`` with the id once committed.
    """
    model = spec_for(event_type).model
    if not isinstance(data, model):
        raise TypeError(f"{event_type} carries {model.__name__}, not {type(data).__name__}")
    outgoing = CloudEvent[Any](
        id=event_id or str(uuid.uuid4()),
        source=f"/blume-share/{producer}",
        type=event_type,
        time=now(),
        tenantid=tenantid,
        correlationid=correlationid,
        data=data,
    )
    message = outbox_message(outgoing)
    session.add(
        OutboxMessage(
            event_id=outgoing.id,
            routing_key=event_type,
            body=message.body,
            created_at=outgoing.time,
        )
    )
    return outgoing


def outbox_message(event: CloudEvent[Any]) -> OutgoingMessage:
    return OutgoingMessage(event.type, event.model_dump_json().encode(), event.id)


@dataclass(frozen=True, slots=True)
class RefusedEvent:
    """What an event from an untrusted producer claimed to be (attacker-chosen, bounded)."""

    event_type: str
    event_id: str
    source: str
    tenantid: str | None
    """The claimed tenant when it is a valid token, else None."""
    producer: str | None
    refusal: str


@dataclass(frozen=True, slots=True)
class RetryNotice:
    """A delivery's first retry for an error class was just scheduled."""

    error_class: str
    first_failed_at: datetime
    next_attempt_at: datetime


Handler = Callable[[CloudEvent[Any], HandlerContext], Awaitable[None]]
InvalidHandler = Callable[[RawEvent, ValidationError, HandlerContext], Awaitable[None]]
UntrustedHook = Callable[[RefusedEvent, AsyncSession], Awaitable[None]]
RetryHook = Callable[[CloudEvent[Any], RetryNotice, HandlerContext], Awaitable[None]]
ExhaustedHook = Callable[[CloudEvent[Any], str, HandlerContext], Awaitable[bool]]


@dataclass(slots=True)
class _Route:
    model: type[BaseModel] | None
    handler: Handler


class Service:
    """A worker: its queue is ``blume.share.<name>``, bound by the types it handles."""

    def __init__(self, name: str, *, bind_all: bool = False) -> None:
        self.name = name
        self._bind_all = bind_all
        self._routes: dict[str, _Route] = {}
        self._catch_all: _Route | None = None
        self.invalid_data_handler: InvalidHandler | None = None
        self.invalid_envelope_handlers: dict[str, InvalidHandler] = {}
        self.untrusted_hook: UntrustedHook | None = None
        self.retry_hook: RetryHook | None = None
        self.exhausted_hook: ExhaustedHook | None = None
        self.startup: list[Callable[[], Awaitable[None]]] = []
        """Async callables run before the first message is consumed (background loops)."""
        self.resources: list[Callable[[], Awaitable[None]]] = []
        """Async callables run at shutdown (closing clients the handlers use)."""

    def handles(self, event_type: str) -> Callable[[Handler], Handler]:
        """Register a handler for one event type; its data is validated against the contract."""

        def register(handler: Handler) -> Handler:
            self._routes[event_type] = _Route(spec_for(event_type).model, handler)
            return handler

        return register

    def handles_any(self, handler: Handler) -> Handler:
        """Register a handler for every event (data left unvalidated)."""
        self._catch_all = _Route(None, handler)
        return handler

    def on_invalid_data(self, handler: InvalidHandler) -> InvalidHandler:
        """Handle events whose envelope is valid but whose data breaks the contract."""
        self.invalid_data_handler = handler
        return handler

    def on_invalid_envelope(self, event_type: str) -> Callable[[InvalidHandler], InvalidHandler]:
        """Answer events of ``event_type`` whose envelope is broken but still has a dedupe key
        and a type; the handler gets a valid stand-in envelope (``usable_envelope``)."""

        def register(handler: InvalidHandler) -> InvalidHandler:
            self.invalid_envelope_handlers[event_type] = handler
            return handler

        return register

    def on_untrusted(self, hook: UntrustedHook) -> UntrustedHook:
        """Run, in a transaction of its own, for each event refused for its producer."""
        self.untrusted_hook = hook
        return hook

    def on_retry_scheduled(self, hook: RetryHook) -> RetryHook:
        """Run, in a transaction of its own, the first time a delivery is scheduled for retry
        with an error class: the moment something starts waiting on an outage."""
        self.retry_hook = hook
        return hook

    def on_exhausted(self, hook: ExhaustedHook) -> ExhaustedHook:
        """Run when a delivery's retry budget ends, in a transaction that also records it as
        processed; returning True answers the message (acknowledged), False dead-letters it."""
        self.exhausted_hook = hook
        return hook

    def route(self, event_type: str) -> tuple[type[BaseModel] | None, Handler] | None:
        route = self._routes.get(event_type, self._catch_all)
        return None if route is None else (route.model, route.handler)

    @property
    def queue(self) -> QueueSpec:
        keys = ("#",) if self._bind_all else tuple(self._routes)
        return QueueSpec(self.name, keys)
