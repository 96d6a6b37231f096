"""Publishing share requests on ``blume.share`` with kombu, each one confirmed by the broker.

The connection has kombu's ``confirm_publish`` transport option: every publish waits for the
broker's ``basic.ack``. A refusal (no such exchange, no permission), an unroutable message
(published ``mandatory``: no queue is bound for it), a lost connection or a ``basic.nack``
that ``max_retries`` further attempts cannot get past, or no confirm within
``confirm_timeout``, raises ``PublishError``: nothing is dropped silently. A message whose
connection was lost, or that was nacked, is published again on a new connection, which is
harmless: the dispatcher makes one share of one (source, id).
"""

from __future__ import annotations

import threading
from typing import Any, Final, TypedDict, Unpack

from amqp.exceptions import AMQPError, MessageNacked
from blume_contracts.envelope import CONTENT_TYPE, EXCHANGE, CloudEvent
from blume_contracts.ids import share_id_for
from blume_contracts.serialisation import event_body
from kombu.connection import Connection
from kombu.exceptions import KombuError
from kombu.messaging import Producer

from blume_share_client.closing import Closing
from blume_share_client.errors import PublishError
from blume_share_client.messages import (
    DEFAULT_SOURCE,
    SendRequest,
    checked_source,
    revoke_event,
    send_event,
)

PERSISTENT: Final = 2
# The workers accept no content encoding but none or "identity"; kombu would otherwise label
# a bytes body "binary".
IDENTITY: Final = "identity"
_PUBLISH_FAILURES: Final = (KombuError, AMQPError, MessageNacked, OSError)
_EVERY_PUBLISH: Final[dict[str, Any]] = {
    "exchange": EXCHANGE,
    "mandatory": True,  # unroutable (no queue bound) is an error, not a silent drop
    "delivery_mode": PERSISTENT,
    "content_type": CONTENT_TYPE,
    "content_encoding": IDENTITY,
    "retry": True,
}
"""What kombu is told for every message, beside its routing key and the retry budget."""


class EventIds(TypedDict, total=False):
    """The envelope ids a caller may choose for a request: ``event_id`` to send the same
    request again after a ``PublishError``, ``correlation_id`` to tie it to its own."""

    event_id: str | None
    correlation_id: str | None


class ShareClient(Closing):
    """Sends ``study.send.requested`` and ``share.revoke.requested`` to Blume Share.

    ``amqp_url`` names the upstream client's own broker user (``omegaai`` in the shipped
    definitions), e.g. ``amqp://omegaai:secret@rabbit:5672/blume``; that user is stamped as
    the AMQP ``user_id``, which RabbitMQ verifies and the audit store records as the
    requester. Safe to share between threads (publishes are serialised); close it, or use it
    as a context manager, when done.
    """

    def __init__(
        self,
        amqp_url: str,
        *,
        source: str = DEFAULT_SOURCE,
        confirm_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        max_retries: int = 3,
    ) -> None:
        self._source = checked_source(source)
        self._confirm_timeout = confirm_timeout
        self._max_retries = max_retries
        self._template = Connection(
            amqp_url,
            connect_timeout=connect_timeout,
            transport_options={"confirm_publish": True},
        )
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._producer: Producer | None = None

    def send(self, request: SendRequest, **ids: Unpack[EventIds]) -> str:
        """Validate, publish and return the id of the share the dispatcher will make.

        ``request`` is bare ``study.send.requested`` data (wrapped in a fresh envelope; pass
        ``event_id`` to send the same request again after a ``PublishError``, and
        ``correlation_id`` to tie it to your own request id) or a whole CloudEvent.
        Raises ``InvalidRequestError`` (nothing sent) or ``PublishError``.
        """
        event = send_event(request, source=self._source, **ids)
        share_id = share_id_for(event)
        self._publish(event, share_id)
        return share_id

    def revoke(
        self,
        share_id: str,
        *,
        tenant_id: str,
        requested_by: str,
        reason: str | None = None,
        **ids: Unpack[EventIds],
    ) -> str:
        """Ask for ``share_id`` to end (its link stops working, its Blume entry is hidden);
        return the request's event id. ``share.revoked`` follows on the outcome queue."""
        event = revoke_event(
            share_id,
            tenant_id=tenant_id,
            requested_by=requested_by,
            reason=reason,
            source=self._source,
            **ids,
        )
        self._publish(event, share_id)
        return event.id

    def close(self) -> None:
        with self._lock:
            self._disconnect(graceful=True)

    def _publish(self, event: CloudEvent[Any], share_id: str) -> None:
        properties: dict[str, Any] = {"message_id": event.id}
        if self._template.userid:
            properties["user_id"] = self._template.userid
        with self._lock:
            try:
                producer = self._producer or self._connect()
                producer.publish(
                    event_body(event),
                    routing_key=event.type,
                    retry_policy={"max_retries": self._max_retries, "interval_max": 5},
                    confirm_timeout=self._confirm_timeout,
                    **_EVERY_PUBLISH,
                    **properties,
                )
            except _PUBLISH_FAILURES as error:
                # The channel may be closed, or hold a confirm owed to this message that the
                # next publish would take for its own: start again on a new connection.
                self._disconnect(graceful=False)
                raise PublishError(_reason(error), event_id=event.id, share_id=share_id) from error

    def _connect(self) -> Producer:
        connection = self._template.clone()
        self._connection = connection
        connection.ensure_connection(max_retries=self._max_retries)
        self._producer = Producer(connection.channel(), auto_declare=False)
        return self._producer

    def _disconnect(self, *, graceful: bool) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        if connection is None:
            return
        if graceful:
            connection.release()
        else:
            connection.collect()  # after a failure the broker may be gone: do not wait on it


def _reason(error: BaseException) -> str:
    """The broker's reply (code and text name the exchange or route, never the body).

    kombu re-raises the AMQP client's errors as its own, often without their text: the
    original is the cause.
    """
    while isinstance(error, KombuError) and error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, MessageNacked):
        return "the broker refused the message (basic.nack)"
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
