"""Which page answers which outcome, with which status and help topic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from blume_contracts.display import display_name
from blume_contracts.events import DenialReason

from blume_access_gateway.blume import StudyView
from blume_access_gateway.links import LinkLookup
from blume_access_gateway.models import ProjectedLink
from blume_access_gateway.pages import Action, Page
from blume_access_gateway.viewer import Refusal, Scope, StudyIndex

TRY_AGAIN_SECONDS: Final = 5

# Help topics (docs/help/<topic>.md).
HELP_LINK: Final = "link-page"
HELP_CODE: Final = "sign-in-code"
HELP_UNAVAILABLE: Final = "link-unavailable"
HELP_NOT_FOUND: Final = "link-not-found"
HELP_RATE_LIMITED: Final = "too-many-attempts"
HELP_SSO: Final = "organisation-sign-in"
HELP_BLUME: Final = "blume-study"
HELP_BLUME_SIGN_IN: Final = "blume-sign-in"
HELP_ERROR: Final = "something-went-wrong"
HELP_VIEWER: Final = "viewer"
HELP_INDEX: Final = "index"
HELP_SENDER_TOPICS: Final = ("sharing-page", "send-external-user", "send-to-blume", "share-status")
"""The sender's pages' topics (``sender_views``)."""

ALL_TOPICS: Final = (
    HELP_LINK,
    HELP_CODE,
    HELP_UNAVAILABLE,
    HELP_NOT_FOUND,
    HELP_RATE_LIMITED,
    HELP_SSO,
    HELP_BLUME,
    HELP_BLUME_SIGN_IN,
    HELP_ERROR,
    HELP_VIEWER,
    HELP_INDEX,
    *HELP_SENDER_TOPICS,
)


def _sender(link: ProjectedLink) -> dict[str, str]:
    # Links minted before the link store kept these fall back to neutral words. The names
    # came from an event: shown without bidirectional or zero-width characters.
    return {
        "sender": display_name(link.sender_name or "") or "the sender",
        "organisation": display_name(link.organisation or "") or "the sending organisation",
    }


def message_page(
    key: str,
    status_code: int,
    help_topic: str,
    *,
    locale: str,
    body: str = "body",
    action: Action | None = None,
    headers: dict[str, str] | None = None,
) -> Page:
    """A page of one message: the title ``<key>.title`` over the paragraph ``<key>.<body>``."""
    return Page(
        "message.html",
        f"{key}.title",
        help_topic,
        locale=locale,
        status_code=status_code,
        context={"body": [f"{key}.{body}"], "action": action},
        headers=headers or {},
    )


def _plain_message(key: str, status_code: int, help_topic: str) -> Callable[[str], Page]:
    """The page of a message that needs nothing but the reader's locale."""

    def page(locale: str) -> Page:
        return message_page(key, status_code, help_topic, locale=locale)

    return page


error_page = _plain_message("error", 500, HELP_ERROR)
not_found_page = _plain_message("not_found", 404, HELP_NOT_FOUND)
bad_request_page = _plain_message("bad_request", 400, HELP_ERROR)
study_not_found_page = _plain_message("blume.not_found", 404, HELP_BLUME)
portal_home_page = _plain_message("blume.home", 200, HELP_BLUME)
portal_sign_in_unavailable_page = _plain_message(
    "blume.sign_in_unavailable", 503, HELP_BLUME_SIGN_IN
)
portal_sign_in_failed_page = _plain_message("blume.sign_in_failed", 403, HELP_BLUME_SIGN_IN)


def link_page(
    link: ProjectedLink,
    csrf: str,
    action_url: str,
    form_targets: tuple[str, ...],
    *,
    granted: bool = False,
) -> Page:
    """The link page; the sender's message (PHI) only in a browser granted access through
    this link (its grant's ``share.link.accessed`` records the disclosure), else only that
    one is waiting."""
    return Page(
        "link.html",
        "link.title",
        HELP_LINK,
        locale=link.locale,
        tenant_id=link.tenant_id,
        context={
            "who": _sender(link),
            "expires_at": link.expires_at,
            "auth": link.recipient_auth,
            "action": Action("link.button", action_url, csrf),
            "message_waiting": link.message is not None and not granted,
            "message": link.message if granted else None,
        },
        form_targets=form_targets,
    )


def code_page(
    link: ProjectedLink,
    *,
    code_csrf: str,
    resend_csrf: str,
    code_url: str,
    resend_url: str,
    error: DenialReason | None = None,
    tries_left: int = 0,
    status_code: int = 200,
) -> Page:
    return Page(
        "code.html",
        "code.title",
        HELP_CODE,
        locale=link.locale,
        status_code=status_code,
        context={
            "error": error,
            "tries_left": tries_left,
            "code_action": Action("code.button", code_url, code_csrf),
            "resend_action": Action("code.resend", resend_url, resend_csrf),
        },
    )


def refusal_page(
    lookup: LinkLookup, reason: DenialReason, *, fallback_locale: str, retry_after: int = 0
) -> Page:
    """The page for a refused link: 404 unknown, 410 expired/revoked/used up, 403 others."""
    if reason == "not_current":
        return try_again_page(fallback_locale)
    link = lookup.link
    if link is None or reason == "unknown":
        return message_page("unknown", 404, HELP_NOT_FOUND, locale=fallback_locale)
    who = _sender(link)
    if reason == "rate_limited":
        return rate_limited_page(link.locale, retry_after)
    if reason in ("expired", "revoked", "max_uses"):
        return Page(
            "unavailable.html",
            f"{reason}.title",
            HELP_UNAVAILABLE,
            locale=link.locale,
            status_code=410,
            tenant_id=link.tenant_id,
            context={
                "reason": reason,
                "who": who,
                "expires_at": link.expires_at,
                "revoked_at": lookup.revoked_at,
                "max_uses": link.max_uses or 0,
            },
        )
    if reason in ("sso_mismatch", "sso_failed", "code_attempts_exhausted"):
        return Page(
            "message.html",
            f"{reason}.title",
            HELP_CODE if reason == "code_attempts_exhausted" else HELP_SSO,
            locale=link.locale,
            status_code=403,
            context={"body": [f"{reason}.body"], "values": who, "action": None},
        )
    return message_page("error", 403, HELP_ERROR, locale=link.locale)


def rate_limited_page(locale: str, retry_after: int) -> Page:
    page = message_page(
        "rate_limited",
        429,
        HELP_RATE_LIMITED,
        locale=locale,
        headers={"Retry-After": str(max(1, retry_after))},
    )
    page.context["values"] = {"seconds": max(1, retry_after)}
    return page


def csrf_page(locale: str, back_url: str) -> Page:
    return message_page(
        "csrf", 403, HELP_LINK, locale=locale, action=Action("csrf.action", back_url)
    )


def unavailable_page(link: ProjectedLink) -> Page:
    page = message_page("unavailable", 503, HELP_ERROR, locale=link.locale)
    page.context["values"] = _sender(link)
    return page


def try_again_page(locale: str) -> Page:
    """The gateway cannot show its view of links and records is current: refuse, briefly."""
    return message_page(
        "try_again",
        503,
        HELP_ERROR,
        locale=locale,
        headers={"Retry-After": str(TRY_AGAIN_SECONDS)},
    )


def sign_in_failed_page(locale: str) -> Page:
    """A sign-in that came back to no round trip of this browser's (no link known)."""
    return message_page("sso_failed", 403, HELP_SSO, locale=locale, body="again")


def study_page(
    study: StudyView, organisation: str, viewer: dict[str, object] | None = None
) -> Page:
    """The patient's study; with ``viewer`` (``viewer_context``) its images below."""
    return Page(
        "blume_study.html",
        "blume.title",
        HELP_BLUME,
        locale=study.locale,
        context={"study": study, "organisation": organisation, "viewer": viewer},
    )


def viewer_page(locale: str, *, valid: bool, use_number: int | None) -> Page:
    return Page(
        "viewer.html",
        "viewer.title",
        HELP_VIEWER,
        locale=locale,
        status_code=200 if valid else 401,
        context={"valid": valid, "use_number": use_number},
    )


def signed_out_page(locale: str) -> Page:
    return message_page("signed_out", 200, HELP_INDEX, locale=locale)


def unsubscribe_page(locale: str, action_url: str) -> Page:
    """The confirmation a GET of the unsubscribe link shows: a button, nothing done yet."""
    return Page(
        "unsubscribe.html",
        "unsubscribe.title",
        HELP_BLUME,
        locale=locale,
        context={"action_url": action_url},
    )


def unsubscribed_page(locale: str) -> Page:
    return message_page("unsubscribed", 200, HELP_BLUME, locale=locale)


# The built-in viewer ----------------------------------------------------------------------

CT_PRESETS: Final = (
    ("viewer.preset.soft_tissue", "40,400"),
    ("viewer.preset.lung", "-600,1500"),
    ("viewer.preset.bone", "400,1800"),
)


def _dicom_date(value: str | None) -> str | None:
    if value is None or len(value) != 8 or not value.isdigit():
        return value
    return f"{value[:4]}-{value[4:6]}-{value[6:]}"


def viewer_context(
    scope: Scope, index: StudyIndex, summary_fields: list[str], *, download: bool
) -> dict[str, object]:
    """What the viewer partial (``_viewer.html``) shows: series by position, never a UID."""
    listing = index.listing
    facts = {
        "study_date": _dicom_date(listing.study_date),
        "modalities": ", ".join(listing.modalities) or None,
        "description": listing.description,
        "patient_name": (listing.patient_name or "").replace("^", " ").strip() or None,
    }
    return {
        "base": f"/view/{scope.handle}",
        "summary": [
            (f"viewer.summary.{name}", facts[name]) for name in summary_fields if facts[name]
        ],
        "series": [
            {
                "number": number,
                "description": series.description,
                "modality": series.modality or "",
                "count": series.instances,
                "ct": series.modality == "CT",
            }
            for number, series in enumerate(index.series, start=1)
        ],
        "presets": CT_PRESETS,
        "download": download,
    }


def study_viewer_page(scope: Scope, viewer: dict[str, object], organisation: str) -> Page:
    return Page(
        "study_viewer.html",
        "viewer.study_title",
        HELP_VIEWER,
        locale=scope.locale,
        context={"viewer": viewer, "organisation": organisation},
    )


def viewer_refusal_page(refusal: Refusal, locale: str) -> Page:
    """404 for a handle this session does not have, 410 once the share ended, 503 while
    the gateway cannot show its view is current."""
    if refusal is Refusal.GONE:
        return message_page("viewer.gone", 410, HELP_VIEWER, locale=locale)
    if refusal is Refusal.NOT_CURRENT:
        return try_again_page(locale)
    return not_found_page(locale)


def study_not_on_pacs_page(locale: str) -> Page:
    return message_page("viewer.not_on_pacs", 200, HELP_VIEWER, locale=locale)
