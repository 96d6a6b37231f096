"""The two requests an upstream system publishes, validated and in their CloudEvent envelope.

A request is validated before anything is sent, against the same models the dispatcher
uses, so a request the contract refuses fails here, in the caller's code, and not later as a
``share.rejected``. (Tenant policy and patient consent are the dispatcher's to judge: those
still come back as ``share.rejected``.)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final, TypeVar

from blume_contracts.envelope import CloudEvent, Token, now
from blume_contracts.events import Contract, ShareRevokeRequested, StudySendRequested
from pydantic import BaseModel, TypeAdapter, ValidationError

from blume_share_client.errors import InvalidRequestError

SEND_TYPE: Final = "study.send.requested"
REVOKE_TYPE: Final = "share.revoke.requested"
DEFAULT_SOURCE: Final = "/omegaai"

SendRequest = StudySendRequested | CloudEvent[StudySendRequested] | Mapping[str, Any]
"""Bare request data (the model or a mapping), or a whole CloudEvent (the model, or a
mapping with ``specversion``) whose envelope the caller chose."""

DataT = TypeVar("DataT", bound=Contract)
_TOKEN: Final = TypeAdapter(Token)


def checked_source(source: str) -> str:
    """A CloudEvents ``source`` the envelope accepts (printable, no spaces, 1-256)."""
    try:
        return _TOKEN.validate_python(source)
    except ValidationError:
        raise ValueError("source must be 1-256 printable characters without spaces") from None


def send_event(
    request: SendRequest,
    *,
    source: str,
    event_id: str | None = None,
    correlation_id: str | None = None,
) -> CloudEvent[StudySendRequested]:
    """``request`` as the CloudEvent to publish, validated.

    Bare data gets a fresh envelope: ``id`` (``event_id``, or a new UUID), ``source``,
    ``time`` now, ``tenantid`` the request's ``tenant_id``, ``correlationid``
    (``correlation_id``, or the event's own id). A whole CloudEvent keeps its envelope, which
    is validated with its data; its ``tenantid`` must be its data's ``tenant_id``.
    """
    document = request.model_dump(mode="json") if isinstance(request, BaseModel) else request
    if not isinstance(document, Mapping):
        raise TypeError("a request is a StudySendRequested, a CloudEvent or a mapping")
    if "specversion" not in document:
        data = _validated(StudySendRequested, document, "the request")
        return _envelope(
            CloudEvent[StudySendRequested],
            SEND_TYPE,
            data,
            data.tenant_id,
            source,
            event_id,
            correlation_id,
        )
    if event_id is not None or correlation_id is not None:
        raise TypeError(
            "event_id and correlation_id are for bare request data: a CloudEvent has its own"
        )
    try:
        event = CloudEvent[StudySendRequested].model_validate(document)
    except ValidationError as error:
        raise InvalidRequestError.from_validation("the CloudEvent", error) from None
    if event.type != SEND_TYPE:
        raise InvalidRequestError(f"the CloudEvent (not a {SEND_TYPE})", ["type"])
    if event.tenantid != event.data.tenant_id:
        raise InvalidRequestError("the CloudEvent (tenantid is not data.tenant_id)", ["tenantid"])
    return event


def revoke_event(
    share_id: str,
    *,
    tenant_id: str,
    requested_by: str,
    reason: str | None,
    source: str,
    event_id: str | None = None,
    correlation_id: str | None = None,
) -> CloudEvent[ShareRevokeRequested]:
    """A ``share.revoke.requested`` for ``share_id`` in ``tenant_id``, validated."""
    data = _validated(
        ShareRevokeRequested,
        {"share_id": share_id, "requested_by": requested_by, "reason": reason},
        "the revocation",
    )
    return _envelope(
        CloudEvent[ShareRevokeRequested],
        REVOKE_TYPE,
        data,
        tenant_id,
        source,
        event_id,
        correlation_id,
    )


def _validated(model: type[DataT], document: Mapping[str, Any], what: str) -> DataT:
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise InvalidRequestError.from_validation(what, error) from None


def _envelope(
    event_class: type[CloudEvent[DataT]],
    event_type: str,
    data: DataT,
    tenant_id: str,
    source: str,
    event_id: str | None,
    correlation_id: str | None,
) -> CloudEvent[DataT]:
    identifier = event_id if event_id is not None else str(uuid.uuid4())
    try:
        return event_class.model_validate(
            {
                "id": identifier,
                "source": source,
                "type": event_type,
                "time": now(),
                "tenantid": tenant_id,
                "correlationid": correlation_id if correlation_id is not None else identifier,
                "data": data,
            }
        )
    except ValidationError as error:
        raise InvalidRequestError.from_validation("the envelope", error) from None
