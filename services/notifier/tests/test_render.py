"""Rendering the link email: locales, MIME structure, escaping, header safety, no PHI."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import jinja2
import pytest
from blume_contracts.events import Locale, Recipient, ShareLinkIssued
from blume_notifier.render import (
    build_link_email,
    environment,
    link_email_context,
    link_message_id,
    render_link_email,
)
from pydantic import ValidationError

from .mail import received

MAIL_FROM = "Blume Share <no-reply@blume-share.example>"
MESSAGE_ID = "<shr_0123456789abcdef0123456789abcdef.link@blume-share.example>"

MakeIssued = Callable[..., ShareLinkIssued]


def email_for(issued: ShareLinkIssued, link: str) -> EmailMessage:
    """Build, serialise and parse back, as the recipient's mail client would see it."""
    return received(build_link_email(issued, link, mail_from=MAIL_FROM, message_id=MESSAGE_ID))


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert isinstance(text, EmailMessage)
    assert isinstance(html, EmailMessage)
    # The SMTP policy writes CRLF line ends; a mail client shows them as plain line breaks.
    return (
        text.get_content().replace("\r\n", "\n"),
        html.get_content().replace("\r\n", "\n"),
    )


def test_english_email_says_who_shared_until_when_with_the_link(
    make_issued: MakeIssued, link: str
) -> None:
    """en-CA: subject names sender and organisation; body has expiry, that a message waits,
    the link and the contact."""
    message = email_for(make_issued(locale="en-CA"), link)
    text, html = parts(message)
    assert message["Subject"] == (
        "Dr. Alice Smith (Demo Hospital) shared an imaging study with you"
    )
    assert message["Content-Language"] == "en-CA"
    for body in (text, html):
        assert "Hello Dr. Bob Jones," in body
        assert "28 November 2026 at 09:00 EST" in body  # the default zone, America/Toronto
        assert "personal and time-limited" in body
        assert "alice@demo-hospital.example" in body
        assert link in body
    assert "also left you a message" in text
    assert '<html lang="en-CA">' in html


def test_french_email_is_in_french_with_french_date(make_issued: MakeIssued, link: str) -> None:
    """fr-CA: French subject and body, expiry written the Quebec way, in the tenant's zone."""
    message = email_for(make_issued(locale="fr-CA"), link)
    text, html = parts(message)
    assert message["Subject"] == (
        "Dr. Alice Smith (Demo Hospital) a partagé un examen d\u2019imagerie avec vous"
    )
    assert message["Content-Language"] == "fr-CA"
    for body in (text, html):
        assert "Bonjour Dr. Bob Jones," in body
        assert "28 novembre 2026 à 9 h 00 EST" in body
        assert "personnel et valide pour une durée limitée" in body
        assert link in body
    assert "Consulter l\u2019examen" in html
    assert '<html lang="fr-CA">' in html
    assert "shared" not in text


def test_email_is_multipart_alternative_text_then_html(make_issued: MakeIssued, link: str) -> None:
    """The email is multipart/alternative: text/plain first, then text/html (the preferred)."""
    message = email_for(make_issued(), link)
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    assert all(part.get_content_charset() == "utf-8" for part in message.iter_parts())


def test_headers_identify_an_automated_email_with_a_stable_id(
    make_issued: MakeIssued, link: str
) -> None:
    """From, To, Reply-To (the sender), Date, Message-ID and Auto-Submitted are set."""
    sent_at = datetime(2026, 11, 25, 14, 0, 5, tzinfo=UTC)
    message = received(
        build_link_email(
            make_issued(),
            link,
            mail_from=MAIL_FROM,
            message_id=MESSAGE_ID,
            sent_at=sent_at,
            sender_domains=["Demo-Hospital.example"],
        )
    )
    assert message["From"] == MAIL_FROM
    assert message["To"].addresses[0].addr_spec == "bob.jones@clinic.example"
    assert message["To"].addresses[0].display_name == "Dr. Bob Jones"
    assert message["Reply-To"].addresses[0].addr_spec == "alice@demo-hospital.example"
    assert parsedate_to_datetime(message["Date"]) == sent_at
    assert message["Message-ID"] == MESSAGE_ID
    assert message["Auto-Submitted"] == "auto-generated"


def test_message_id_is_stable_per_share_and_uses_the_from_domain() -> None:
    """The Message-ID depends only on the share and the From domain, so a resend reuses it."""
    share_id = "shr_" + "a" * 32
    first = link_message_id(share_id, MAIL_FROM)
    assert first == link_message_id(share_id, MAIL_FROM)
    assert first == f"<{share_id}.link@blume-share.example>"
    assert link_message_id("shr_" + "b" * 32, MAIL_FROM) != first


def test_from_without_an_address_is_refused() -> None:
    """A From setting with no domain cannot make a Message-ID: a ValueError, not a bad header."""
    with pytest.raises(ValueError, match="domain"):
        link_message_id("shr_" + "a" * 32, "Blume Share")


@pytest.mark.parametrize("locale", ["en-CA", "fr-CA"])
def test_the_senders_message_never_reaches_the_email(
    make_issued: MakeIssued, link: str, locale: str
) -> None:
    """Issue 12.1: the sender's free text (PHI per the contract) is in no part of the email:
    not a word of it in the subject, text or HTML; the email only says a message waits."""
    typed = "Quixotic zebrafish Worthington protocol: MRN-0001 DOE^JANE biopsy tomorrow"
    message = email_for(make_issued(message=typed, locale=locale), link)
    text, html = parts(message)
    whole = "\n".join([message["Subject"], text, html])
    for word in typed.split():
        assert word.strip(":") not in whole, word
    waiting = "also left you a message" if locale == "en-CA" else "vous a aussi laissé un message"
    assert waiting in text
    assert waiting in html


def test_plain_text_parts_are_not_html_escaped(make_issued: MakeIssued, link: str) -> None:
    """An ampersand in the organisation stays "&" in subject and text, "&amp;" only in HTML."""
    message = email_for(make_issued(organisation="Smith & Jones Imaging"), link)
    text, html = parts(message)
    assert "(Smith & Jones Imaging)" in message["Subject"]
    assert "(Smith & Jones Imaging)" in text
    assert "&amp;" not in text
    assert "(Smith &amp; Jones Imaging)" in html


@pytest.mark.parametrize("blank", [None, "", "   \n "])
def test_message_section_is_left_out_without_a_message(
    make_issued: MakeIssued, link: str, blank: str | None
) -> None:
    """No message (or only whitespace): the email does not say a message waits."""
    text, html = parts(email_for(make_issued(message=blank), link))
    assert "left you a message" not in text
    assert "left you a message" not in html


def test_link_is_a_button_in_html_and_plain_in_text(make_issued: MakeIssued, link: str) -> None:
    """HTML carries the link as the button's href; the text part has it on its own line."""
    text, html = parts(email_for(make_issued(), link))
    assert f'<a href="{link}" target="_blank" rel="noopener"' in html
    assert link in text.splitlines()


def test_template_context_carries_nothing_about_patient_or_study(
    make_issued: MakeIssued, link: str
) -> None:
    """Templates see an allow-list of sender/recipient/link fields; nothing else can leak."""
    context = link_email_context(make_issued(), link)
    assert set(context) == {
        "lang",
        "recipient_name",
        "sender_name",
        "sender_email",
        "organisation",
        "has_message",
        "link",
        "expires",
    }


def test_no_message_text_or_link_in_any_header(make_issued: MakeIssued, link: str) -> None:
    """The sender's message (may name the patient) and the link never reach a header."""
    # Headers are what relays log and phones show on lock screens.
    phi_like = "Jane Doe MRN-0001 CT chest"
    message = email_for(make_issued(message=phi_like), link)
    token = link.rsplit("/", 1)[1]
    headers = "\n".join(f"{name}: {value}" for name, value in message.items())
    assert phi_like not in parts(message)[0]
    assert "Jane Doe" not in headers
    assert "MRN-0001" not in headers
    assert token not in headers
    for part in message.iter_parts():
        part_headers = "\n".join(str(value) for _name, value in part.items())
        assert "Jane Doe" not in part_headers
        assert token not in part_headers


def test_contract_refuses_crlf_in_recipient_name() -> None:
    """A recipient name with CR/LF never passes the contract."""
    with pytest.raises(ValidationError):
        Recipient(name="Dr. Bob\r\nBcc: mallory@attacker.example", email="bob@clinic.example")


@pytest.mark.parametrize("newline", ["\r\n", "\n", "\r"])
def test_crlf_in_recipient_name_cannot_inject_a_header(
    make_issued: MakeIssued, link: str, newline: str
) -> None:
    """Even past the contract, a name with a line break raises instead of adding a Bcc."""
    valid = make_issued()
    forged = valid.model_copy(
        update={
            "recipient": Recipient.model_construct(
                name=f"Dr. Bob{newline}Bcc: mallory@attacker.example", email=valid.recipient.email
            )
        }
    )
    with pytest.raises(ValueError, match="CR or LF"):
        build_link_email(forged, link, mail_from=MAIL_FROM, message_id=MESSAGE_ID)


def test_link_that_is_not_http_is_refused(make_issued: MakeIssued) -> None:
    """Only an absolute http(s) URL may become the button's href (no javascript: links)."""
    with pytest.raises(ValueError, match="http"):
        build_link_email(
            make_issued(), "javascript:alert(1)", mail_from=MAIL_FROM, message_id=MESSAGE_ID
        )


@pytest.mark.parametrize(
    "template", ["en-CA/link_issued.txt", "fr-CA/link_issued.html", "en-CA/link_issued.subject.txt"]
)
def test_missing_template_variable_raises(
    make_issued: MakeIssued, link: str, template: str
) -> None:
    """StrictUndefined: a variable the caller forgot is an error, not an empty string."""
    context = link_email_context(make_issued(), link)
    del context["sender_name"]
    with pytest.raises(jinja2.UndefinedError, match="sender_name"):
        environment.get_template(template).render(context, subject="s")


@pytest.mark.parametrize("locale", ["en-CA", "fr-CA"])
def test_every_locale_renders_non_empty_parts(
    make_issued: MakeIssued, link: str, locale: Locale
) -> None:
    """Each supported locale has a subject, a text and an HTML template that render."""
    rendered = render_link_email(make_issued(locale=locale), link)
    assert rendered.subject
    assert "\n" not in rendered.subject
    assert link in rendered.text
    assert rendered.html.lstrip().startswith("<!DOCTYPE html>")


def test_reply_to_is_the_sender_only_at_one_of_the_tenants_sender_domains(
    make_issued: MakeIssued, link: str
) -> None:
    """A sender address outside the tenant's sender_domains (or none configured) gets no
    Reply-To: an event cannot point the recipient's replies at an address of its choosing."""
    issued = make_issued()

    def reply_to(domains: list[str]) -> str | None:
        built = build_link_email(
            issued, link, mail_from=MAIL_FROM, message_id=MESSAGE_ID, sender_domains=domains
        )
        return built["Reply-To"]

    assert reply_to([]) is None
    assert reply_to(["other.example", "hospital.example"]) is None
    assert reply_to(["demo-hospital.example"]) is not None


def test_names_in_subject_headers_and_bodies_lose_bidi_and_zero_width_characters(
    make_issued: MakeIssued, link: str
) -> None:
    """A sender named with a right-to-left override and zero-width joiners reaches the
    subject, the To display name and both bodies without them."""
    issued = make_issued(organisation="Demo\u200b Hospital\u2067")
    issued = issued.model_copy(
        update={
            "sender": issued.sender.model_copy(update={"name": "Dr. Alice\u202e Smith\u200d"}),
            "recipient": issued.recipient.model_copy(update={"name": "Dr. Bob\u2066 Jones"}),
        }
    )
    message = email_for(issued, link)
    assert message["Subject"] == "Dr. Alice Smith (Demo Hospital) shared an imaging study with you"
    assert message["To"].addresses[0].display_name == "Dr. Bob Jones"
    for body in parts(message):
        for invisible in ("\u202e", "\u200d", "\u200b", "\u2066", "\u2067"):
            assert invisible not in body
        assert "Hello Dr. Bob Jones," in body
