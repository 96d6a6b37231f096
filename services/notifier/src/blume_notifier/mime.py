"""The notifier's emails as MIME: built with the standard library's ``email.mime`` classes
(the ``compat32`` policy) and flattened once, on the way out.

Why not ``EmailMessage`` with the SMTP policy: it parses every header through the header
registry when it is set and folds it again when the message is flattened, which cost about
1.4 ms of CPU per email, a tenth of the notifier's (issue 14). Here the work is done once:

- every header value is refused if it holds a CR or LF (no header injection), before any
  formatting;
- a display name or a subject outside ASCII becomes RFC 2047 encoded words of at most 75
  characters (``email.header.Header``), so the headers are ASCII; an ASCII
  display name is quoted as it needs (``email.utils.formataddr``);
- both bodies are UTF-8, quoted-printable (what the content manager chose for our
  templates, whose lines are long), so the whole email is 7-bit clean and every line is
  at most 76 characters in the bodies, 78 in the headers.

An address outside ASCII (an internationalised mailbox, RFC 6531) cannot be an encoded
word: its header must be raw UTF-8 (RFC 6532), which ``compat32`` cannot write. Such an
email is built as before, an ``EmailMessage`` with the SMTPUTF8 policy, and the mailer sends
it with SMTPUTF8 as before.
"""

from __future__ import annotations

import quopri
import re
import secrets
from collections.abc import Mapping
from email.generator import BytesGenerator
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import SMTPUTF8, Compat32, EmailPolicy
from email.utils import formataddr, parseaddr
from functools import lru_cache
from io import BytesIO
from typing import Final, NamedTuple

_MAX_LINE: Final = 998  # RFC 5322 2.1.1, without the CRLF
_FOLD_AT: Final = 76
_LINE_BREAK: Final = re.compile(r"[\r\n]")
_ONE_TOKEN: Final = re.compile(r"[!-~]+")
_PRINTABLE: Final = re.compile(r"[ -~]*")


class _WirePolicy(Compat32):
    """compat32, but an ASCII value with nothing to fold is written as it is, on its header's
    line: one that fits the line, or one with no whitespace to fold at (a Message-ID, a
    List-Unsubscribe URL). For the first, compat32 would give the same line after running it
    through ``Header``'s splitter (most of the flattening time); the second, compat32 would
    move to a continuation line of its own once the line passes the limit, and a reader that
    keeps folding whitespace would then see it with a leading space (the SMTP policy left it
    on the header's line, as here)."""

    def fold(self, name: str, value: str) -> str:
        if _as_it_is(name, value):
            return f"{name}: {value}{self.linesep}"
        return super().fold(name, value)

    def fold_binary(self, name: str, value: str) -> bytes:
        if _as_it_is(name, value):
            return self.fold(name, value).encode("ascii")
        return super().fold_binary(name, value)


def _as_it_is(name: str, value: object) -> bool:
    if not isinstance(value, str):
        return False  # a Header: encoded words, split by Header
    line = len(name) + 2 + len(value)
    if line <= _FOLD_AT:
        return _PRINTABLE.fullmatch(value) is not None
    return line <= _MAX_LINE and _ONE_TOKEN.fullmatch(value) is not None


WIRE_POLICY: Final = _WirePolicy(linesep="\r\n", mangle_from_=False, max_line_length=_FOLD_AT)
"""CRLF line ends, as SMTP sends them; a body line starting "From " stays as it is (mbox
quoting is for mbox files, and the SMTP policy did not do it either); header lines folded
at 76, so that an encoded word on a continuation line (after its space) is at most 75
characters, as RFC 2047 requires (``Header`` fills the line)."""


class Mailbox(NamedTuple):
    """A display name (may be empty) and an addr-spec."""

    name: str
    address: str


def checked(value: str) -> str:
    """``value`` unchanged, or ``ValueError`` when it holds a CR or LF: a line break in a
    header value could start a header of its own (a Bcc, say)."""
    if _LINE_BREAK.search(value):
        raise ValueError("header values cannot contain CR or LF")
    return value


@lru_cache(maxsize=8)
def parse_mailbox(text: str) -> Mailbox:
    """``Blume Share <no-reply@blume.example>`` as a Mailbox (the From setting, parsed once)."""
    name, address = parseaddr(checked(text))
    return Mailbox(name, address)


def alternative_email(
    mailboxes: Mapping[str, Mailbox], headers: Mapping[str, str], text: str, html: str
) -> OutgoingEmail | EmailMessage:
    """A multipart/alternative email (``text``, then ``html``) with ``mailboxes`` (From, To,
    maybe Reply-To) and ``headers``; ``ValueError`` when a header value holds a CR or LF."""
    for mailbox in mailboxes.values():
        checked(mailbox.name)
        checked(mailbox.address)
    for value in headers.values():
        checked(value)
    if not all(mailbox.address.isascii() for mailbox in mailboxes.values()):
        return header_registry_email(mailboxes, headers, text, html)
    message = OutgoingEmail(mailboxes["From"].address, [mailboxes["To"].address])
    for field, mailbox in mailboxes.items():
        _set(message, field, _mailbox_value(field, mailbox))
    for field, value in headers.items():
        _set(message, field, value if value.isascii() else _encoded(field, value))
    message.attach(_quoted_printable_part(text, "plain"))
    message.attach(_quoted_printable_part(html, "html"))
    return message


class OutgoingEmail(MIMEMultipart):
    """A multipart/alternative email with its SMTP envelope (MAIL FROM, RCPT TO): the From
    and To addresses it was built from, as aiosmtplib's ``send_message`` took them from the
    headers. Never parsed back from the headers, where a display name is free text."""

    def __init__(self, sender: str, recipients: list[str]) -> None:
        # A boundary the bodies cannot hold, so the generator need not search them for it
        # (it compiles a new regular expression per message to do so): "=_" never occurs in
        # quoted-printable, which writes "=" as "=3D" and uses it only before two hex digits
        # or a line break; the parts' own headers are ours and hold no "=_".
        super().__init__("alternative", boundary=f"=_{secrets.token_hex(16)}", policy=WIRE_POLICY)
        self.envelope_sender = sender
        self.envelope_recipients = recipients


def _mailbox_value(field: str, mailbox: Mailbox) -> str | Header:
    if mailbox.name.isascii():
        return formataddr(mailbox)  # quotes the name when it needs quoting
    value = _encoded(field, mailbox.name)
    value.append(f"<{mailbox.address}>", "us-ascii")
    return value


def _encoded(field: str, value: str) -> Header:
    """RFC 2047 encoded words, each at most 75 characters, folded at 78 when flattened."""
    # utf-8's header encoding is the shorter of B and Q: usually B, which Header also splits
    # in linear time (its Q splitting measures the line again for every character).
    return Header(value, "utf-8", header_name=field)


def _set(message: Message, field: str, value: str | Header) -> None:
    # compat32 takes a Header as a value (the email.header documentation's own example);
    # typeshed types the values as str only.
    message[field] = value  # type: ignore[assignment]


def _quoted_printable_part(body: str, subtype: str) -> Message:
    part = MIMENonMultipart("text", subtype, policy=WIRE_POLICY, charset="utf-8")
    del part["MIME-Version"]  # only the top level carries it
    part["Content-Transfer-Encoding"] = "quoted-printable"
    # Every line break as LF and one at the end, as the content manager writes a body;
    # quopri (binascii's C encoder) rather than Charset's pure-Python one: the same encoding.
    lines = body.encode().splitlines()
    part.set_payload(quopri.encodestring(b"\n".join(lines) + b"\n").decode("ascii"))
    return part


def header_registry_email(
    mailboxes: Mapping[str, Mailbox],
    headers: Mapping[str, str],
    text: str,
    html: str,
    policy: EmailPolicy[EmailMessage] = SMTPUTF8,
) -> EmailMessage:
    """The same email built the ``EmailMessage`` way, every header through the header
    registry: what an internationalised address needs, and the reference the compat32 build
    is checked (tests) and timed (``bench.notifier_mime``) against."""
    message = EmailMessage(policy=policy)
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    # After the body: set_content clears every Content-* header already present.
    for field, mailbox in mailboxes.items():
        message[field] = Address(display_name=mailbox.name, addr_spec=mailbox.address)
    for field, value in headers.items():
        message[field] = value
    return message


def wire_bytes(message: Message) -> bytes:
    """``message`` flattened as it goes on the wire: CRLF line ends; an ``EmailMessage`` in its
    own policy."""
    policy = message.policy if isinstance(message, EmailMessage) else WIRE_POLICY
    with BytesIO() as flattened:
        BytesGenerator(flattened, policy=policy).flatten(message)
        return flattened.getvalue()
