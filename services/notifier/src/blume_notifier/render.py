"""Rendering the share emails: Jinja2 templates per locale, HTML and plain text.

What goes into an email is deliberately small: who shared (name, organisation, contact),
the link, until when it works, and whether the sender left a message (never the message
itself: free text may hold PHI, so the link page shows it once access is granted). Nothing
about the patient or the study reaches the templates, so nothing about them can reach an
inbox.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import format_datetime, parseaddr
from typing import Any, Final, NotRequired, TypedDict, Unpack

from blume_contracts.display import DEFAULT_TIME_ZONE, display_name, format_moment
from blume_contracts.events import (
    ShareBlumePublished,
    ShareLinkIssued,
    ShareLinkLocked,
    ShareOtpRequested,
)
from blume_contracts.locales import Locale
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from blume_notifier.mime import Mailbox, alternative_email, parse_mailbox

environment: Final = Environment(
    loader=PackageLoader("blume_notifier", "templates"),
    # Only .html is escaped: the .txt parts are plain text, where "&amp;" would be a typo.
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    # The templates ship inside the package and change only with it: no stat of each file
    # on every email to see whether it changed.
    auto_reload=False,
)


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def link_email_context(
    data: ShareLinkIssued, link: str, time_zone: str = DEFAULT_TIME_ZONE
) -> dict[str, Any]:
    """Everything the link templates may use; an allow-list, so no PHI can slip in.
    Names pass through ``display_name`` (no bidirectional or zero-width characters); the
    expiry is in the tenant's ``time_zone`` (``format_moment``, as on the link page)."""
    return {
        "lang": data.locale,
        "recipient_name": display_name(data.recipient.name),
        "sender_name": display_name(data.sender.name),
        "sender_email": data.sender.email,
        "organisation": display_name(data.organisation),
        # Only whether there is one: the message is PHI, shown on the link page after access.
        "has_message": bool(data.message and data.message.strip()),
        "link": link,
        "expires": format_moment(data.expires_at, data.locale, time_zone),
    }


def render(template: str, locale: Locale, context: dict[str, Any]) -> RenderedEmail:
    """Render ``<locale>/<template>`` subject and both bodies.

    Raises ``jinja2.TemplateError`` on a broken template.
    """
    subject_template = environment.get_template(f"{locale}/{template}.subject.txt")
    # A subject is one line: collapse whatever whitespace the template left.
    subject = " ".join(subject_template.render(context).split())
    text = environment.get_template(f"{locale}/{template}.txt").render(context)
    html = environment.get_template(f"{locale}/{template}.html").render(context, subject=subject)
    return RenderedEmail(subject=subject, text=text, html=html)


def render_link_email(
    data: ShareLinkIssued, link: str, time_zone: str = DEFAULT_TIME_ZONE
) -> RenderedEmail:
    return render("link_issued", data.locale, link_email_context(data, link, time_zone))


def render_blume_email(locale: Locale, portal_link: str) -> RenderedEmail:
    """The "Step into Blume" email: that a new study is available, nothing about it."""
    return render("blume_published", locale, {"lang": locale, "link": portal_link})


def message_domain(mail_from: str) -> str:
    """The domain of the From address: ``Blume <no-reply@blume.example>`` gives ``blume.example``.

    Raises ``ValueError`` when ``mail_from`` holds no address with a domain.
    """
    _name, address = parseaddr(mail_from)
    local, at, domain = address.rpartition("@")
    if not (local and at and domain):
        raise ValueError("the From address (BLUME_MAIL_FROM) needs an address with a domain")
    return domain


def message_id_for(share_id: str, kind: str, mail_from: str) -> str:
    """Stable per share and kind, so a resend is recognisable as the same email downstream."""
    return f"<{share_id}.{kind}@{message_domain(mail_from)}>"


def link_message_id(share_id: str, mail_from: str) -> str:
    return message_id_for(share_id, "link", mail_from)


class Stamp(TypedDict):
    """What every email of ours is stamped with: its From, its Message-ID and, unless it is
    now, its Date."""

    mail_from: str
    message_id: str
    sent_at: NotRequired[datetime | None]


def compose(
    rendered: RenderedEmail,
    *,
    to: Mailbox,
    locale: Locale,
    link: str | None,
    reply_to: Mailbox | None = None,
    extra_headers: dict[str, str] | None = None,
    **stamp: Unpack[Stamp],
) -> Message:
    """A multipart/alternative email (text, then HTML) with headers built safely.

    Raises ``ValueError`` when a header cannot be built safely (a CR or LF in any header
    value) or the link is not an absolute http(s) URL.
    """
    if link is not None and not link.startswith(("https://", "http://")):
        raise ValueError("the link must be an absolute http(s) URL")
    mailboxes = {"From": parse_mailbox(stamp["mail_from"]), "To": to}
    if reply_to is not None:
        mailboxes["Reply-To"] = reply_to
    headers = {
        "Subject": rendered.subject,
        "Date": format_datetime(stamp.get("sent_at") or datetime.now(UTC)),
        "Message-ID": stamp["message_id"],
        "Auto-Submitted": "auto-generated",
        # Stops Exchange and Outlook from answering with out-of-office replies.
        "X-Auto-Response-Suppress": "All",
        "Content-Language": locale,
        **(extra_headers or {}),
    }
    return alternative_email(mailboxes, headers, rendered.text, rendered.html)


def in_domains(address: str, domains: Collection[str]) -> bool:
    """Whether ``address`` is at one of ``domains`` exactly (case-insensitive)."""
    _local, at, domain = address.rpartition("@")
    return bool(at) and domain.lower() in {allowed.lower() for allowed in domains}


def _addressed(name: str, address: str) -> Mailbox:
    return Mailbox(display_name(name), address)


def build_link_email(
    event_data: ShareLinkIssued,
    link: str,
    *,
    sender_domains: Collection[str] = (),
    time_zone: str = DEFAULT_TIME_ZONE,
    **stamp: Unpack[Stamp],
) -> Message:
    """The "a study was shared with you" email to an external recipient; Reply-To the
    sender only when the sender's address is in the tenant's ``sender_domains``."""
    return compose(
        render_link_email(event_data, link, time_zone),
        to=_addressed(event_data.recipient.name, event_data.recipient.email),
        # Replies reach the person who shared, not an unmonitored no-reply box: but only at
        # an address of the tenant's own, so an event cannot point replies anywhere else.
        reply_to=(
            _addressed(event_data.sender.name, event_data.sender.email)
            if in_domains(event_data.sender.email, sender_domains)
            else None
        ),
        locale=event_data.locale,
        link=link,
        **stamp,
    )


def build_blume_email(
    event_data: ShareBlumePublished,
    portal_link: str,
    *,
    unsubscribe: str | None = None,
    **stamp: Unpack[Stamp],
) -> Message:
    """The "Step into Blume" email to the patient, in the patient's locale.

    With ``unsubscribe`` (an https URL holding an opaque token): ``List-Unsubscribe`` and
    ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 2369, RFC 8058), so a mail
    client's Unsubscribe button switches the patient's Blume emails off in one POST.
    """
    one_click = (
        {
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
        if unsubscribe is not None
        else None
    )
    return compose(
        render_blume_email(event_data.locale, portal_link),
        to=Mailbox("", event_data.patient_email),
        locale=event_data.locale,
        link=portal_link,
        extra_headers=one_click,
        **stamp,
    )


def build_link_locked_email(event_data: ShareLinkLocked, **stamp: Unpack[Stamp]) -> Message:
    """To the sender: the link is locked after too many wrong codes; share again if needed.
    In the link's locale (the sender's own is not known); no link, nothing of the study."""
    context = {
        "lang": event_data.locale,
        "sender_name": display_name(event_data.sender_name),
        "recipient_name": display_name(event_data.recipient.name),
        "organisation": display_name(event_data.organisation),
    }
    return compose(
        render("link_locked", event_data.locale, context),
        to=_addressed(event_data.sender_name, event_data.sender_email),
        locale=event_data.locale,
        link=None,
        **stamp,
    )


def build_code_email(event_data: ShareOtpRequested, code: str, **stamp: Unpack[Stamp]) -> Message:
    """The sign-in code, to the invited address only. The code stays out of the subject,
    which lock screens and notification banners show to anyone nearby."""
    minutes = max(1, round((event_data.expires_at - datetime.now(UTC)).total_seconds() / 60))
    context = {
        "lang": event_data.locale,
        "recipient_name": display_name(event_data.recipient.name),
        "organisation": display_name(event_data.organisation),
        "code": code,
        "minutes": minutes,
    }
    rendered = render("sign_in_code", event_data.locale, context)
    return compose(
        rendered,
        to=_addressed(event_data.recipient.name, event_data.recipient.email),
        locale=event_data.locale,
        link=None,
        **stamp,
    )
