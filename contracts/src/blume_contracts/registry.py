"""Who produces and who consumes each event type. The routing key is the event type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel

from blume_contracts import events as ev
from blume_contracts.sensitivity import Sensitivity, protect_secrets, sensitive_field_names

UPSTREAM: Final = "omegaai"
OPS: Final = "ops"
"""The operator's tools: ``blume-share revoke`` and the dead-letter replay and purge."""


@dataclass(frozen=True, slots=True)
class EventSpec:
    event_type: str
    model: type[BaseModel]
    summary: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    outside: bool = False
    """Published from outside the product (upstream clients, the CLI): accepted from any
    publisher the broker lets publish it. Every other type is accepted only from the broker
    user of a service named in ``producers`` (see ``blume_runtime.identity``)."""


_AUDIT = "audit_sink"
_GATEWAY = "access_gateway"

EVENTS: Final[dict[str, EventSpec]] = {
    spec.event_type: spec
    for spec in (
        EventSpec(
            "study.send.requested",
            ev.StudySendRequested,
            "A user asked to share a study by secure link or into Blume.",
            (UPSTREAM, _GATEWAY),
            ("share_dispatcher", _AUDIT),
            outside=True,
        ),
        EventSpec(
            "share.accepted",
            ev.ShareAccepted,
            "The request passed validation, policy and consent; a share exists.",
            ("share_dispatcher",),
            (UPSTREAM, _AUDIT, _GATEWAY),
        ),
        EventSpec(
            "share.rejected",
            ev.ShareRejected,
            "The request was refused, with a machine-readable reason code.",
            ("share_dispatcher",),
            (UPSTREAM, _AUDIT, _GATEWAY),
        ),
        EventSpec(
            "share.link.requested",
            ev.ShareLinkRequested,
            "The dispatcher asks for a secure link for an accepted external share.",
            ("share_dispatcher",),
            ("link_issuer", _AUDIT),
        ),
        EventSpec(
            "share.blume.requested",
            ev.ShareBlumeRequested,
            "The dispatcher asks for an accepted study to be published into a Blume record.",
            ("share_dispatcher",),
            ("blume_publisher", _AUDIT),
        ),
        EventSpec(
            "share.blume.published",
            ev.ShareBlumePublished,
            "The study is in the patient's Blume record.",
            ("blume_publisher",),
            ("notifier", "share_dispatcher", _GATEWAY, _AUDIT),
        ),
        EventSpec(
            "share.blume.withheld",
            ev.ShareBlumeWithheld,
            "The patient's account or consent directives forbade publishing; nothing was.",
            ("blume_publisher",),
            ("share_dispatcher", _AUDIT),
        ),
        EventSpec(
            "share.link.issued",
            ev.ShareLinkIssued,
            "A link was minted; the sealed link travels to the notifier only.",
            ("link_issuer",),
            ("notifier", _GATEWAY, _AUDIT),
        ),
        EventSpec(
            "share.notification.sent",
            ev.ShareNotificationSent,
            "The SMTP server accepted the email.",
            ("notifier",),
            ("share_dispatcher", _AUDIT, _GATEWAY),
        ),
        EventSpec(
            "share.notification.failed",
            ev.ShareNotificationFailed,
            "The notifier gave up sending the email.",
            ("notifier",),
            ("share_dispatcher", _AUDIT, _GATEWAY),
        ),
        EventSpec(
            "share.notification.delayed",
            ev.ShareNotificationDelayed,
            "The email waits on an outage (SMTP, database); the notifier keeps retrying.",
            ("notifier",),
            ("share_dispatcher", _AUDIT),
        ),
        EventSpec(
            "share.notification.suppressed",
            ev.ShareNotificationSuppressed,
            "No email was sent: the patient turned email notifications off.",
            ("notifier",),
            ("share_dispatcher", _AUDIT),
        ),
        EventSpec(
            "share.completed",
            ev.ShareCompleted,
            "The share reached its recipient.",
            ("share_dispatcher",),
            (UPSTREAM, _AUDIT, _GATEWAY),
        ),
        EventSpec(
            "share.failed",
            ev.ShareFailed,
            "The share's path gave up.",
            ("share_dispatcher",),
            (UPSTREAM, _AUDIT, _GATEWAY),
        ),
        EventSpec(
            "share.revoke.requested",
            ev.ShareRevokeRequested,
            "Someone asked to end a share: its link stops working, its Blume entry is hidden.",
            (UPSTREAM, OPS, _GATEWAY),
            ("share_dispatcher", _AUDIT),
            outside=True,
        ),
        EventSpec(
            "share.revoked",
            ev.ShareRevoked,
            "The share was revoked.",
            ("share_dispatcher",),
            ("link_issuer", "blume_publisher", _GATEWAY, UPSTREAM, _AUDIT),
        ),
        EventSpec(
            "share.link.opened",
            ev.ShareLinkOpened,
            "The recipient's link page was viewed.",
            (_GATEWAY,),
            ("share_dispatcher", _AUDIT, _GATEWAY),
        ),
        EventSpec(
            "share.link.accessed",
            ev.ShareLinkAccessed,
            "Access to the study was granted through the link.",
            (_GATEWAY,),
            ("share_dispatcher", _AUDIT, _GATEWAY),
        ),
        EventSpec(
            "share.link.denied",
            ev.ShareLinkDenied,
            "Access through a link was refused, with the reason.",
            (_GATEWAY,),
            (_AUDIT,),
        ),
        EventSpec(
            "share.otp.requested",
            ev.ShareOtpRequested,
            "A one-time sign-in code is to be emailed to the invited recipient.",
            (_GATEWAY,),
            ("notifier", _AUDIT),
        ),
        EventSpec(
            "share.link.locked",
            ev.ShareLinkLocked,
            "A link was locked after too many wrong sign-in codes; the sender is to be told.",
            ("access_gateway",),
            ("notifier", _AUDIT),
        ),
        EventSpec(
            "share.tracking.updated",
            ev.ShareTrackingUpdated,
            "The dispatcher's count of a link share's opens and grants changed.",
            ("share_dispatcher",),
            (UPSTREAM, _AUDIT),
        ),
        EventSpec(
            "share.sender.notification.requested",
            ev.SenderNotificationRequested,
            "The sender is to be told by email that a share was rejected, failed, first "
            "accessed or revoked (no PHI).",
            ("share_dispatcher",),
            ("notifier", _AUDIT),
        ),
        EventSpec(
            "ops.dead_letters.replayed",
            ev.DeadLettersReplayed,
            "An operator moved dead letters back onto their service's queue.",
            (OPS,),
            (_AUDIT,),
        ),
        EventSpec(
            "ops.dead_letters.purged",
            ev.DeadLettersPurged,
            "An operator deleted dead letters.",
            (OPS,),
            (_AUDIT,),
        ),
        EventSpec(
            "share.blume.viewed",
            ev.ShareBlumeViewed,
            "A patient viewed a study in their Blume record.",
            (_GATEWAY,),
            (_AUDIT, _GATEWAY),
        ),
        EventSpec(
            "share.blume.denied",
            ev.ShareBlumeDenied,
            "A signed-in patient was refused a portal entry (someone else's or unknown).",
            (_GATEWAY,),
            (_AUDIT,),
        ),
        EventSpec(
            "session.signed_out",
            ev.SessionSignedOut,
            "A patient or a recipient signed out of the gateway; the session is ended.",
            (_GATEWAY,),
            (_AUDIT,),
        ),
        EventSpec(
            "share.images.viewed",
            ev.ShareImagesViewed,
            "A series of a shared study was opened in the gateway's viewer (BALP Read).",
            (_GATEWAY,),
            (_AUDIT,),
        ),
        EventSpec(
            "patient.notifications.unsubscribed",
            ev.PatientNotificationsUnsubscribed,
            "A patient switched off Blume email notifications (one-click unsubscribe).",
            (_GATEWAY,),
            ("blume_publisher", _AUDIT),
        ),
        EventSpec(
            "share.images.exported",
            ev.ShareImagesExported,
            "A shared study's DICOM files were downloaded through the gateway (BALP Export).",
            (_GATEWAY,),
            (_AUDIT,),
        ),
        EventSpec(
            "share.images.unavailable",
            ev.ShareImagesUnavailable,
            "The viewer was opened but the shared study is not on the tenant's PACS.",
            (_GATEWAY,),
            (_AUDIT,),
        ),
        EventSpec(
            "patient.account.updated",
            ev.PatientAccountUpdated,
            "A Blume patient account was created or changed (status, consent, preferences).",
            ("blume_publisher",),
            ("share_dispatcher", _GATEWAY, _AUDIT),
        ),
    )
}


def spec_for(event_type: str) -> EventSpec:
    try:
        return EVENTS[event_type]
    except KeyError:
        raise KeyError(f"unknown event type {event_type!r}") from None


def consumed_by(service: str) -> list[str]:
    """The event types the registry says ``service`` consumes, sorted."""
    return sorted(spec.event_type for spec in EVENTS.values() if service in spec.consumers)


SENSITIVE_FIELDS: Final[dict[str, Sensitivity]] = sensitive_field_names(
    [spec.model for spec in EVENTS.values()]
)


def protect_for_audit(data: Any) -> Any:
    """Event data as the audit store keeps it: secrets replaced by fingerprints."""
    return protect_secrets(data, SENSITIVE_FIELDS)
