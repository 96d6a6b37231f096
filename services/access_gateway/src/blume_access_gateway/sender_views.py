"""The sender's pages: which template, status and help topic answers each outcome.

The sharing page shows PHI (the study and its patient) to the sender; its ``<title>`` is
the fixed "Share a study", and nothing of the study reaches a URL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from blume_contracts.launches import LaunchRequest
from blume_runtime.tenants import TenantPolicy
from pydantic import ValidationError
from starlette.requests import Request

from blume_access_gateway.i18n import CATALOGUES, browser_locale
from blume_access_gateway.launches import (
    BlumeReadiness,
    LaunchRefusal,
    SenderSession,
    SendForm,
)
from blume_access_gateway.models import ProjectedShareStatus, SenderShare
from blume_access_gateway.pages import Action, Page
from blume_access_gateway.views import HELP_SENDER_TOPICS, message_page

HELP_SHARING, HELP_EXTERNAL, HELP_BLUME, HELP_STATUS = HELP_SENDER_TOPICS
EXPIRY_CHOICES: Final = (1, 4, 24, 48, 72, 168, 336, 720)
_NAME_PART: Final = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def error_fields(error: ValidationError) -> list[dict[str, Any]]:
    """FastAPI's 422 shape with field names and error types only: no value, no message
    that could quote one, and a key a caller invented is shown as ``?``."""
    listed: list[dict[str, Any]] = []
    for detail in error.errors(include_input=False, include_url=False, include_context=False):
        location = [
            part if isinstance(part, int) or _NAME_PART.match(part) else "?"
            for part in detail["loc"]
        ]
        listed.append({"loc": ["body", *location], "msg": "invalid", "type": detail["type"]})
    return listed


def session_locale(request: Request, sender: SenderSession | None) -> str:
    return sender.launch.locale if sender is not None else browser_locale(request)


def expiry_choices(policy: TenantPolicy) -> list[int]:
    """The chooser's hours: common durations up to the tenant's cap, and its default."""
    allowed = {hours for hours in EXPIRY_CHOICES if hours <= policy.link_expiry_max_hours}
    return sorted(allowed | {policy.link_expiry_default_hours})


def launch_refused_page(request: Request, refusal: LaunchRefusal) -> Page:
    status = 404 if refusal is LaunchRefusal.UNKNOWN else 410
    return message_page(
        f"launch.{refusal.value}", status, HELP_SHARING, locale=browser_locale(request)
    )


def session_over_page(request: Request) -> Page:
    return message_page("sender_session", 403, HELP_SHARING, locale=browser_locale(request))


def sender_sign_in_failed_page(request: Request) -> Page:
    return message_page("sender_sign_in", 403, HELP_SHARING, locale=browser_locale(request))


def sender_mismatch_page(request: Request, sender: SenderSession) -> Page:
    return message_page(
        "sender_mismatch", 403, HELP_SHARING, locale=session_locale(request, sender)
    )


def sender_csrf_page(locale: str) -> Page:
    return message_page(
        "sender_csrf", 403, HELP_SHARING, locale=locale, action=Action("csrf.action", "/send")
    )


def share_not_found_page(request: Request) -> Page:
    return message_page("share_not_found", 404, HELP_STATUS, locale=browser_locale(request))


@dataclass(frozen=True, slots=True)
class Step:
    """One line of the status view's timeline."""

    name: str
    text_key: str
    done: bool
    values: dict[str, Any]
    alert: bool = False


def reason_key(code: str | None) -> str:
    key = f"reason.{code}"
    return key if key in CATALOGUES["en-CA"] else "reason.other"


def _counted(name: str, word: str, count: int, when: dict[str, Any]) -> Step:
    """A step done once it has happened at all (opened, viewed): how often, and when
    (``status.step.<word>``, or ``status.step.not_<word>`` while it has not)."""
    done = count > 0
    key = f"status.step.{word}" if done else f"status.step.not_{word}"
    return Step(name, key, done, {"count": count, **when})


def timeline(status: ProjectedShareStatus) -> list[Step]:
    """The share's steps so far, for the sender (and the next ones, not done yet)."""
    steps = [Step("accepted", "status.step.accepted", status.accepted_at is not None, {})]
    last_accessed = {"last": status.last_accessed_at}
    if status.method == "blume":
        steps.append(Step("sent", "status.step.published", status.completed_at is not None, {}))
        steps.append(_counted("accessed", "viewed", status.accessed_count, last_accessed))
    else:
        steps += [
            Step("link_issued", "status.step.link_issued", status.link_issued_at is not None, {}),
            Step("sent", "status.step.email_sent", status.email_sent_at is not None, {}),
        ]
        opened = {"first": status.first_opened_at, "last": status.last_opened_at}
        steps.append(_counted("opened", "opened", status.opened_count, opened))
        steps.append(_counted("accessed", "accessed", status.accessed_count, last_accessed))
    if status.state in ("rejected", "failed"):
        reason = {"key": reason_key(status.reason), "code": status.reason or ""}
        steps.append(Step(status.state, f"status.step.{status.state}", True, reason, alert=True))
    if status.revoked_at is not None:
        steps.append(Step("revoked", "status.step.revoked", True, {"when": status.revoked_at}))
    return steps


def _earlier(
    earlier: Sequence[tuple[SenderShare, ProjectedShareStatus | None]],
) -> list[dict[str, Any]]:
    return [
        {
            "share_id": share.share_id,
            "method": share.method,
            "recipient": share.recipient_label,
            "created_at": share.created_at,
            "state": status.state if status else "requested",
        }
        for share, status in earlier
    ]


def sharing_page(
    launch: LaunchRequest,
    policy: TenantPolicy,
    readiness: BlumeReadiness,
    form: SendForm,
    errors: dict[str, str],
    csrf: str,
    earlier: Sequence[tuple[SenderShare, ProjectedShareStatus | None]],
    status_code: int = 200,
) -> Page:
    return Page(
        "sender.html",
        "sender.title",
        HELP_SHARING,
        locale=launch.locale,
        status_code=status_code,
        context={
            "launch": launch,
            "organisation": policy.display_name,
            "recipient_auth": policy.recipient_auth,
            "readiness": readiness.value,
            "form": form,
            "errors": errors,
            "max_hours": policy.link_expiry_max_hours,
            "choices": expiry_choices(policy),
            "default_hours": policy.link_expiry_default_hours,
            "csrf": csrf,
            "earlier": _earlier(earlier),
        },
    )


def status_page(
    locale: str,
    status: ProjectedShareStatus,
    earlier: Sequence[tuple[SenderShare, ProjectedShareStatus | None]],
) -> Page:
    return _status_view(
        "sender_status.html",
        "status.title",
        locale,
        status=status,
        steps=timeline(status),
        earlier=_earlier(earlier),
        revocable=status.state not in ("rejected", "failed", "revoked"),
    )


def timeline_fragment(locale: str, status: ProjectedShareStatus) -> Page:
    return _status_view("sender_timeline.html", "status.title", locale, steps=timeline(status))


def revoke_confirm_page(locale: str, status: ProjectedShareStatus, csrf: str) -> Page:
    share_url = f"/send/shares/{status.share_id}"
    confirm = Action("status.revoke.confirm", f"{share_url}/revoke", csrf)
    return _status_view(
        "sender_revoke.html", "status.revoke.title", locale, confirm=confirm, cancel_url=share_url
    )


def _status_view(template: str, title_key: str, locale: str, **context: Any) -> Page:
    """A page of the status view (its help topic), in the sender's language."""
    return Page(template, title_key, HELP_STATUS, locale=locale, context=context)
