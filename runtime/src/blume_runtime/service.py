"""How a worker declares itself: a name, the event types it handles, thin handler functions."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from blume_contracts import audit_entry
from blume_contracts.envelope import CloudEvent, RawEvent
from blume_contracts.registry import spec_for
from pydantic import BaseModel, ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_runtime.lifecycle import Component
from blume_runtime.topology import QueueSpec
from blume_runtime.unit_of_work import UnitOfWork


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


@dataclass(slots=True, kw_only=True)
class HandlerContext(UnitOfWork):
    """What a handler gets besides its event: its unit of work (the transaction and
    ``emit``, with ids derived from the event being handled) and the delivery's facts."""

    attempt: int
    log: Any
    producer: str | None = None
    """The verified broker user that published the event (None if the broker named none)."""


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

    def security_record(self) -> RawEvent:
        """What the audit store keeps of this event: its claims and its publisher."""
        return audit_entry.security_record(
            event_type=self.event_type,
            event_id=self.event_id,
            source=self.source,
            tenantid=self.tenantid,
            producer=self.producer,
            refusal=self.refusal,
        )


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
    """A worker: its queue is ``blume.share.<name>``, bound by the types it handles and any
    ``extra_keys`` (or by ``#`` with ``bind_all``); with ``binds_unrouted`` also to
    ``blume.share.unrouted``, for what ``blume.share`` routes to no queue.

    One handler style throughout: a class holds what the handlers need (settings, clients,
    a sealer), its methods are the handlers, and the service's ``build`` registers them in
    one table (``service.handles("share.revoked")(issuer.revoke_link)``).
    """

    def __init__(
        self,
        name: str,
        *,
        bind_all: bool = False,
        extra_keys: Iterable[str] = (),
        binds_unrouted: bool = False,
        group_commit: bool = True,
    ) -> None:
        self.name = name
        self._bind_all = bind_all
        self._extra_keys = tuple(extra_keys)
        """Routing keys bound besides the handled types (for a ``handles_any`` handler)."""
        self._binds_unrouted = binds_unrouted
        """Whether the queue also takes what ``blume.share`` routes nowhere (``QueueSpec``)."""
        self.group_commit = group_commit
        """Whether deliveries that queue up may share one transaction (``blume_runtime.worker``).
        False for handlers with effects outside the database (an email sent): a batch rolled
        back because of a neighbour runs them again, and would repeat those effects."""
        self._routes: dict[str, _Route] = {}
        self._catch_all: _Route | None = None
        self.invalid_data_handler: InvalidHandler | None = None
        self.invalid_envelope_handlers: dict[str, InvalidHandler] = {}
        self.untrusted_hook: UntrustedHook | None = None
        self.retry_hook: RetryHook | None = None
        self.exhausted_hook: ExhaustedHook | None = None
        self.components: list[Component] = []
        """What the service runs beside its handlers (background loops, clients): started
        before the first message is consumed, stopped after the last."""

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
        keys = (
            ("#",) if self._bind_all else tuple(dict.fromkeys([*self._routes, *self._extra_keys]))
        )
        return QueueSpec(self.name, keys, binds_unrouted=self._binds_unrouted)
