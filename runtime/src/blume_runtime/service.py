"""How a worker declares itself: a name, the event types it handles, thin handler functions."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from blume_contracts.envelope import CloudEvent, RawEvent, now
from blume_contracts.registry import spec_for
from pydantic import BaseModel, ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_runtime.db import OutboxMessage
from blume_runtime.topology import QueueSpec
from blume_runtime.transport import OutgoingMessage

_EVENT_IDS: Final = uuid.UUID("5f0d0e36-47c1-4c4f-9a53-4a3b8e0f2b61")


class PermanentError(Exception):
    """The message can never succeed: dead-letter it without retrying."""


class TransientError(Exception):
    """The message may succeed later (a dependency is down): retry after a delay."""


@dataclass(slots=True)
class HandlerContext:
    """What a handler gets besides its event: the transaction and a way to emit events."""

    service: str
    event: RawEvent
    session: AsyncSession
    attempt: int
    final_attempt: bool
    log: Any
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


Handler = Callable[[CloudEvent[Any], HandlerContext], Awaitable[None]]
InvalidHandler = Callable[[RawEvent, ValidationError, HandlerContext], Awaitable[None]]


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

    def route(self, event_type: str) -> tuple[type[BaseModel] | None, Handler] | None:
        route = self._routes.get(event_type, self._catch_all)
        return None if route is None else (route.model, route.handler)

    @property
    def queue(self) -> QueueSpec:
        keys = ("#",) if self._bind_all else tuple(self._routes)
        return QueueSpec(self.name, keys)

    def logger(self) -> Any:
        return structlog.get_logger(self.name)
