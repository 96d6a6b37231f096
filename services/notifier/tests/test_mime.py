"""The compat32 build against the header-registry build it replaced: what a mail client reads
back is the same, the bytes are 7-bit CRLF with short lines, and no header takes a CR or LF."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, message_from_string, policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from typing import Any

import pytest
from blume_contracts.events import (
    Recipient,
    Sender,
    SenderNotificationRequested,
    ShareBlumePublished,
    ShareLinkIssued,
    ShareLinkLocked,
    ShareOtpRequested,
)
from blume_notifier import mime, render
from blume_notifier.mime import Mailbox, alternative_email, header_registry_email, wire_bytes
from blume_notifier.render import (
    build_blume_email,
    build_code_email,
    build_link_email,
    build_link_locked_email,
)
from blume_notifier.sender_notices import build_sender_notice_email

from .mail import received

MAIL_FROM = "Blume Share <no-reply@blume-share.example>"
SHARE_ID = "shr_" + "0123456789abcdef" * 2
STAMP: Any = {
    "mail_from": MAIL_FROM,
    "message_id": f"<{SHARE_ID}.sender-first-access@blume-share.example>",
    "sent_at": datetime(2026, 11, 25, 14, 0, 5, tzinfo=UTC),
}
RECIPIENT = Recipient(name="Dr. Zoé Côté-Bélanger", email="zoe@clinic.example")
SENDER = Sender(user_id="u-123", name="Dr. Hélène Dubé", email="helene@demo-hospital.example")
ORGANISATION = "Hôpital Démo & Associés"
ENCODED_WORD = re.compile(rb"=\?utf-8\?[qb]\?[^?]*\?=", re.IGNORECASE)


def link(issued: ShareLinkIssued) -> Message:
    return build_link_email(
        issued,
        "https://share.demo-hospital.example/s/" + "T" * 43,
        sender_domains=["demo-hospital.example"],
        **STAMP,
    )


def issued(locale: Any) -> ShareLinkIssued:
    return ShareLinkIssued(
        share_id=SHARE_ID,
        link_id="lnk_" + "fedcba9876543210" * 2,
        token_fingerprint="sha256:" + "ab" * 16,
        sealed_link="unused-here",
        expires_at=datetime(2026, 11, 28, 14, 0, tzinfo=UTC),
        recipient=RECIPIENT,
        sender=SENDER,
        organisation=ORGANISATION,
        message="Please review.",
        locale=locale,
    )


def blume(locale: Any) -> Message:
    published = ShareBlumePublished(
        share_id=SHARE_ID,
        blume_patient_id="bp-0001",
        entry_id="ent_" + "ab" * 16,
        newly_published=True,
        email_notifications=True,
        patient_email="jane.doe@mail.example",
        locale=locale,
    )
    unsubscribe = "https://share.demo-hospital.example/unsubscribe/" + "u" * 120
    return build_blume_email(
        published, "https://portal.example/blume/s/1", unsubscribe=unsubscribe, **STAMP
    )


def code(locale: Any) -> Message:
    request = ShareOtpRequested(
        share_id=SHARE_ID,
        link_id="lnk_" + "ef" * 16,
        challenge_id="otp_" + "01" * 16,
        recipient=RECIPIENT,
        organisation=ORGANISATION,
        locale=locale,
        sealed_code="unused-here",
        expires_at=datetime.now(UTC) + timedelta(minutes=10),
    )
    return build_code_email(request, "493817", **STAMP)


def locked(locale: Any) -> Message:
    event = ShareLinkLocked(
        share_id=SHARE_ID,
        link_id="lnk_" + "ef" * 16,
        sender_name=SENDER.name,
        sender_email=SENDER.email,
        recipient=RECIPIENT,
        organisation=ORGANISATION,
        locale=locale,
        locked_at=datetime(2026, 11, 25, 14, 0, tzinfo=UTC),
    )
    return build_link_locked_email(event, **STAMP)


def sender_notice(locale: Any) -> Message:
    notice = SenderNotificationRequested(
        share_id=SHARE_ID,
        occasion="first_access",
        sender_name=SENDER.name,
        sender_email=SENDER.email,
        recipient_hint="z***@clinic.example",
        locale=locale,
    )
    return build_sender_notice_email(notice, organisation=ORGANISATION, **STAMP)


EMAILS: dict[str, Callable[[Any], Message]] = {
    "link": lambda locale: link(issued(locale)),
    "blume": blume,
    "code": code,
    "locked": locked,
    "sender_notice": sender_notice,
}


@pytest.fixture
def references(monkeypatch: pytest.MonkeyPatch) -> list[EmailMessage]:
    """Each email the notifier builds is also built the header-registry way (the SMTP policy,
    as before), from the same headers and bodies; the list holds those, parsed back."""
    built: list[EmailMessage] = []

    def both(
        mailboxes: Mapping[str, Mailbox], headers: Mapping[str, str], text: str, html: str
    ) -> Message:
        reference = header_registry_email(mailboxes, headers, text, html, policy.SMTP)
        parsed = message_from_bytes(reference.as_bytes(), policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        built.append(parsed)
        return alternative_email(mailboxes, headers, text, html)

    monkeypatch.setattr(render, "alternative_email", both)
    return built


def headers_of(message: EmailMessage) -> dict[str, list[str]]:
    """Every header but Content-Type (its boundary is random) and MIME-Version (the
    header-registry build repeated it in a part), as a mail client decodes them."""
    fields: dict[str, list[str]] = {}
    for name, value in message.items():
        if name.lower() not in {"content-type", "mime-version"}:
            fields.setdefault(name.lower(), []).append(str(value))
    return fields


def parts_of(message: EmailMessage) -> list[tuple[str, str | None, str, str]]:
    return [
        (
            part.get_content_type(),
            part.get_content_charset(),
            part.get("Content-Transfer-Encoding", ""),
            str(part.get_content()),
        )
        for part in message.iter_parts()
    ]


@pytest.mark.parametrize("locale", ["en-CA", "fr-CA"])
@pytest.mark.parametrize("kind", EMAILS)
def test_every_email_reads_back_as_the_header_registry_build(
    references: list[EmailMessage], kind: str, locale: str
) -> None:
    """Each email, in each locale, with accented names: the default-policy parser reads the
    same headers (encoded words decoded), the same two parts with the same charsets and
    transfer encodings, and the same decoded bodies as from the EmailMessage build."""
    message = received(EMAILS[kind](locale))
    [reference] = references
    assert headers_of(message) == headers_of(reference)
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == reference.get_content_type() == "multipart/alternative"
    assert parts_of(message) == parts_of(reference)
    assert [part[:3] for part in parts_of(message)] == [
        ("text/plain", "utf-8", "quoted-printable"),
        ("text/html", "utf-8", "quoted-printable"),
    ]


@pytest.mark.parametrize("kind", EMAILS)
def test_the_wire_bytes_are_ascii_crlf_lines_of_at_most_78(kind: str) -> None:
    """Non-ASCII names and subjects become encoded words and the bodies quoted-printable:
    the bytes are ASCII, every line ends in CRLF (no bare CR or LF) and none passes 78
    characters, though a Message-ID or a List-Unsubscribe URL may (up to 998)."""
    data = wire_bytes(EMAILS[kind]("fr-CA"))
    assert data.isascii()
    assert data.endswith(b"\r\n")
    lines = data.split(b"\r\n")
    assert not [line for line in lines if b"\r" in line or b"\n" in line]
    long_lines = [line for line in lines if len(line) > 78]
    assert all(line.startswith((b"Message-ID: <", b"List-Unsubscribe: <")) for line in long_lines)
    assert all(len(line) <= 998 for line in long_lines)
    if kind != "blume":  # the only one with no name, its French subject ASCII
        assert ENCODED_WORD.search(data.split(b"\r\n\r\n")[0])


def test_a_long_message_id_stays_on_its_header_line() -> None:
    """A Message-ID past 78 characters is not folded onto a line of its own: it reads back
    with no leading space, equal to what the notifier records."""
    message = locked("en-CA")
    assert wire_bytes(message).count(b"\r\nMessage-ID: " + STAMP["message_id"].encode() + b"\r\n")
    assert received(message)["Message-ID"] == STAMP["message_id"]


def test_long_non_ascii_names_and_subjects_are_encoded_words_of_75_at_most() -> None:
    """A 200-character accented name: RFC 2047 encoded words of at most 75 characters that
    an RFC 2047 decoder turns back into the name, and a subject the parser reads back whole."""
    name = ("Zoé Côté-Bélanger " * 12).strip()[:200]
    subject = f"{name} a partagé un examen d\u2019imagerie avec vous"
    message = alternative_email(
        {"From": Mailbox("Blume", "no-reply@blume.example"), "To": Mailbox(name, "z@c.example")},
        {"Subject": subject, "Message-ID": "<a@blume.example>"},
        "texte\n",
        "<p>texte</p>\n",
    )
    head = wire_bytes(message).split(b"\r\n\r\n")[0]
    assert all(len(word) <= 75 for word in ENCODED_WORD.findall(head))
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    unfolded = re.sub(rb"\r\n[ \t]", b" ", head).decode("ascii")
    [to] = re.findall(r"^To: (.*)$", unfolded, re.MULTILINE)
    assert str(make_header(decode_header(to))) == f"{name} <z@c.example>"
    assert received(message)["Subject"] == subject


def test_a_body_line_starting_with_from_is_not_quoted() -> None:
    """mbox's ">From " quoting is not applied: the text part reads back as written."""
    text = "From the hospital:\nFrom here on, nothing changes.\n"
    message = alternative_email(
        {"From": Mailbox("", "no-reply@blume.example"), "To": Mailbox("", "z@c.example")},
        {"Subject": "s"},
        text,
        "<p>html</p>\n",
    )
    plain = received(message).get_body(("plain",))
    assert plain is not None
    assert plain.get_content().replace("\r\n", "\n") == text


LINE_BREAKS = ["\r\n", "\n", "\r"]
INJECTED = "Bcc: mallory@attacker.example"


def build_with(field: str, value: str, mailboxes: dict[str, Mailbox] | None = None) -> Message:
    headers = {"Subject": "s", "Message-ID": "<a@blume.example>", field: value}
    return alternative_email(
        mailboxes or {"From": Mailbox("B", "b@blume.example"), "To": Mailbox("", "z@c.example")},
        headers,
        "t\n",
        "<p>h</p>\n",
    )


@pytest.mark.parametrize("newline", LINE_BREAKS)
@pytest.mark.parametrize(
    "field", ["Subject", "Message-ID", "Date", "List-Unsubscribe", "Content-Language"]
)
def test_a_line_break_in_any_header_value_is_refused(field: str, newline: str) -> None:
    """CR, LF or CRLF in a header value, ASCII or not: ValueError, never a second header."""
    for value in (f"x{newline}{INJECTED}", f"é{newline}{INJECTED}", f"x{newline} folded"):
        with pytest.raises(ValueError, match="CR or LF"):
            build_with(field, value)


@pytest.mark.parametrize("newline", LINE_BREAKS)
@pytest.mark.parametrize("field", ["From", "To", "Reply-To"])
@pytest.mark.parametrize("where", ["name", "address"])
def test_a_line_break_in_any_mailbox_is_refused(field: str, where: str, newline: str) -> None:
    """CR, LF or CRLF in a display name (ASCII or not) or an address: ValueError."""
    mailboxes = {"From": Mailbox("B", "b@blume.example"), "To": Mailbox("", "z@c.example")}
    for name in (f"Bob{newline}{INJECTED}", f"Zoé{newline}{INJECTED}"):
        forged = (
            Mailbox(name, "z@c.example")
            if where == "name"
            else Mailbox("Bob", f"z@c.example{newline}{INJECTED}")
        )
        with pytest.raises(ValueError, match="CR or LF"):
            build_with("Subject", "s", {**mailboxes, field: forged})


def test_a_line_break_in_the_from_setting_is_refused() -> None:
    """BLUME_MAIL_FROM with a line break cannot add a header either."""
    with pytest.raises(ValueError, match="CR or LF"):
        mime.parse_mailbox(f"Blume <no-reply@blume.example>\r\n{INJECTED}")


def test_an_internationalised_address_is_built_for_smtputf8() -> None:
    """An address outside ASCII cannot be an encoded word: the email is an EmailMessage whose
    flattened headers carry the address as UTF-8 (RFC 6532), read back unchanged."""
    message = alternative_email(
        {"From": Mailbox("Blume", "no-reply@blume.example"), "To": Mailbox("José", "jose@cé.ca")},
        {"Subject": "Un examen partagé", "Content-Language": "fr-CA"},
        "texte\n",
        "<p>texte</p>\n",
    )
    assert isinstance(message, EmailMessage)
    data = wire_bytes(message)
    assert "jose@cé.ca".encode() in data
    # UTF-8 headers: decoded as UTF-8 before parsing (message_from_bytes would keep the
    # bytes as surrogates).
    parsed = message_from_string(data.decode(), policy=policy.default)
    assert parsed["To"].addresses[0].addr_spec == "jose@cé.ca"
    assert parsed["Subject"] == "Un examen partagé"
    assert parsed["Content-Language"] == "fr-CA"


def test_bodies_holding_boundary_like_lines_read_back_whole() -> None:
    """The boundary is not searched for in the bodies (quoted-printable cannot hold "=_"): a
    body with lines like a boundary, or like the end of the message, reads back unchanged."""
    text = "--=_\n--=_0123456789abcdef--\n=_=_\n.\n"
    html = "<p>--=_</p>\n"
    message = alternative_email(
        {"From": Mailbox("", "no-reply@blume.example"), "To": Mailbox("", "z@c.example")},
        {"Subject": "s"},
        text,
        html,
    )
    parsed = received(message)
    assert [str(part.get_content()).replace("\r\n", "\n") for part in parsed.iter_parts()] == [
        text,
        html,
    ]


@pytest.mark.parametrize(
    "value",
    [
        "Wed, 25 Nov 2026 14:00:05 +0000",
        "two  spaces and a trailing one ",
        "x" * 67,  # with "Subject: ", exactly 76
        "A short subject that still has to be folded once it passes seventy-six",
    ],
)
def test_a_header_that_fits_is_written_as_compat32_writes_it(value: str) -> None:
    """The policy's shortcut for a line that fits gives compat32's own bytes; a longer one is
    folded by compat32 as before."""
    compat32_wire = policy.compat32.clone(linesep="\r\n", max_line_length=76)
    assert mime.WIRE_POLICY.fold_binary("Subject", value) == compat32_wire.fold_binary(
        "Subject", value
    )
