"""Internal event cases: forged producers, and real producers sending broken data.

A forged event is refused on who sent it, before its data is read: ``untrusted_producer``
at every consumer, the audit sink included (which records it as a security event, never
as genuine). An event from its registered producer whose data breaks the contract is a bug
upstream of the consumer: ``contract``, and the audit sink records it as it came.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.bad_input.corpus import CONTRACT, RECORDED, UNTRUSTED, Case, Outcome, Producer
from tests.bad_input.messages import MISSING, correlation_id, encode, envelope, event_id, example


def _internal(
    tag: str,
    name: str,
    event_type: str,
    producer: Producer,
    expect: Outcome,
    audit: Outcome,
    data_changes: Mapping[str, Any] | None = None,
    headers: Mapping[str, Any] | None = None,
    **attributes: Any,
) -> Case:
    data = example(event_type)["data"]
    for key, value in (data_changes or {}).items():
        if value is MISSING:
            del data[key]
        else:
            data[key] = value
    return Case(
        name,
        "internal",
        encode(envelope(tag, name, event_type, data=data, **attributes)),
        frozenset({expect}),
        frozenset({audit}),
        routing_key=event_type,
        message_id=event_id(tag, name),
        headers=dict(headers or {}),
        producer=producer,
        correlation_id=correlation_id(tag, name),
    )


def _forged(tag: str, name: str, event_type: str, producer: Producer, **options: Any) -> Case:
    return _internal(tag, name, event_type, producer, UNTRUSTED, UNTRUSTED, **options)


def _broken(tag: str, name: str, event_type: str, changes: Mapping[str, Any]) -> Case:
    return _internal(tag, name, event_type, Producer.SERVICE, CONTRACT, RECORDED, changes)


def _forgeries(tag: str) -> list[Case]:
    """Issue 8, defect 5: events that would make us send a trusted email or change a share."""
    attacker = {"patient_email": "victim@attacker.example", "email_notifications": True}
    return [
        _forged(
            tag,
            "forged-blume-published-anonymous",
            "share.blume.published",
            Producer.ANONYMOUS,
            data_changes=attacker,
            source="/evil/forged",
        ),
        _forged(
            tag,
            "forged-blume-published-stranger",
            "share.blume.published",
            Producer.STRANGER,
            data_changes=attacker,
        ),
        _forged(
            tag,
            "forged-producer-header",
            "share.blume.published",
            Producer.ANONYMOUS,
            data_changes=attacker,
            headers={"x-blume-producer": "blume_publisher", "x-blume-attempt": 2},
        ),
        _forged(tag, "forged-link-issued", "share.link.issued", Producer.STRANGER),
        _forged(tag, "forged-notification-sent", "share.notification.sent", Producer.ANONYMOUS),
        _forged(
            tag,
            "forged-notification-failed",
            "share.notification.failed",
            Producer.STRANGER,
            source="/blume-share/notifier",
        ),
        _forged(tag, "forged-suppressed", "share.notification.suppressed", Producer.ANONYMOUS),
        _forged(tag, "forged-withheld", "share.blume.withheld", Producer.STRANGER),
        _forged(tag, "forged-otp-requested", "share.otp.requested", Producer.ANONYMOUS),
        _forged(tag, "forged-link-requested", "share.link.requested", Producer.STRANGER),
        _forged(tag, "forged-revoked", "share.revoked", Producer.ANONYMOUS),
        # Refused on identity before the data is read, however broken the data is.
        _forged(
            tag,
            "forged-and-broken",
            "share.notification.sent",
            Producer.STRANGER,
            data_changes={"share_id": "'; DROP TABLE dispatcher_shares; --"},
        ),
    ]


def _breaches(tag: str) -> list[Case]:
    return [
        _broken(tag, "contract-share-id", "share.notification.sent", {"share_id": "shr_nope"}),
        _broken(
            tag,
            "contract-patient-email",
            "share.blume.published",
            {"patient_email": "jane.doe@mail.example\r\nBcc: all@evil.example"},
        ),
        _broken(tag, "contract-sealed-link-missing", "share.link.issued", {"sealed_link": MISSING}),
        _broken(
            tag, "contract-failure-reason", "share.notification.failed", {"reason": "gremlins"}
        ),
        _broken(tag, "contract-withheld-10k", "share.blume.withheld", {"message": "w" * 10_000}),
        _broken(
            tag, "contract-suppressed-null", "share.notification.suppressed", {"share_id": None}
        ),
    ]


def _revoke_requests(tag: str) -> list[Case]:
    """share.revoke.requested comes from outside: any publisher, judged on its data."""
    return [
        _internal(
            tag,
            name,
            "share.revoke.requested",
            Producer.ANONYMOUS,
            CONTRACT,
            RECORDED,
            changes,
        )
        for name, changes in (
            ("revoke-share-id-sql", {"share_id": "shr_' OR 1=1 --"}),
            ("revoke-requested-by-missing", {"requested_by": MISSING}),
            ("revoke-reason-10k", {"reason": "r" * 10_000}),
        )
    ]


def cases(tag: str) -> list[Case]:
    return [*_forgeries(tag), *_breaches(tag), *_revoke_requests(tag)]
