"""SmtpMailer and the notifier against a real SMTP server (aiosmtpd on a free local port)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email import message_from_bytes, message_from_string, policy
from email.message import EmailMessage, Message
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import ShareLinkIssued
from blume_notifier.mailer import MailRejected, MailUnavailable, SmtpMailer
from blume_notifier.mime import Mailbox, alternative_email
from blume_notifier.render import build_link_email, link_message_id, render_link_email
from blume_notifier.service import build
from blume_runtime.settings import Settings

pytestmark = pytest.mark.integration

MakeIssued = Callable[..., ShareLinkIssued]
MakeEvent = Callable[..., CloudEvent[ShareLinkIssued]]
MAIL_FROM = "Blume Share <no-reply@blume-share.example>"


def link_email(issued: ShareLinkIssued, link: str) -> Message:
    return build_link_email(
        issued, link, mail_from=MAIL_FROM, message_id=link_message_id(issued.share_id, MAIL_FROM)
    )


def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_smtp_mailer_delivers_the_rendered_email(
    smtp_server: Any, make_issued: MakeIssued, link: str
) -> None:
    """The server receives the email for the recipient, from the From address, intact."""
    issued = make_issued(locale="fr-CA")
    await SmtpMailer(smtp_server.url, timeout=5).send(link_email(issued, link))

    (received,) = await smtp_server.wait_for(1)
    assert smtp_server.envelopes == [("no-reply@blume-share.example", [issued.recipient.email])]
    assert received["Subject"] == (
        "Dr. Alice Smith (Demo Hospital) a partagé un examen d\u2019imagerie avec vous"
    )
    assert received["Message-ID"] == f"<{issued.share_id}.link@blume-share.example>"
    assert received.get_content_type() == "multipart/alternative"
    text = received.get_body(("plain",))
    html = received.get_body(("html",))
    assert isinstance(text, EmailMessage)
    assert isinstance(html, EmailMessage)
    assert link in text.get_content()
    assert f'href="{link}"' in html.get_content()
    assert "28 novembre 2026 à 9 h 00 EST" in text.get_content()


async def test_permanent_smtp_reply_raises_mail_rejected(
    smtp_server: Any, make_issued: MakeIssued, link: str
) -> None:
    """A 550 from the server is MailRejected, carrying the code and no address."""
    smtp_server.reject_with = "550 5.1.1 <bob.jones@clinic.example> mailbox unavailable"
    with pytest.raises(MailRejected) as raised:
        await SmtpMailer(smtp_server.url, timeout=5).send(link_email(make_issued(), link))
    assert "550" in str(raised.value)
    assert "bob.jones" not in str(raised.value)
    assert smtp_server.messages == []


async def test_temporary_smtp_reply_raises_mail_unavailable(
    smtp_server: Any, make_issued: MakeIssued, link: str
) -> None:
    """A 451 (try again later) from the server is MailUnavailable, so the share is retried."""
    smtp_server.reject_with = "451 4.3.0 temporary local problem"
    with pytest.raises(MailUnavailable, match="451"):
        await SmtpMailer(smtp_server.url, timeout=5).send(link_email(make_issued(), link))


async def test_closed_port_raises_mail_unavailable_quickly(
    make_issued: MakeIssued, link: str
) -> None:
    """Nothing listening is MailUnavailable at once, not a hang until some long timeout."""
    mailer = SmtpMailer(f"smtp://127.0.0.1:{closed_port()}", timeout=5)
    started = time.monotonic()
    with pytest.raises(MailUnavailable):
        await mailer.send(link_email(make_issued(), link))
    assert time.monotonic() - started < 2


async def test_silent_server_times_out_as_mail_unavailable(
    make_issued: MakeIssued, link: str
) -> None:
    """A server that accepts the connection but never greets is cut off by the timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        mailer = SmtpMailer(f"smtp://127.0.0.1:{port}", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(MailUnavailable, match="timed out"):
            await mailer.send(link_email(make_issued(), link))
    assert time.monotonic() - started < 3


async def test_notifier_emails_through_smtp_from_settings(
    smtp_server: Any,
    settings: Settings,
    make_pipeline: Callable[..., Any],
    make_issued: MakeIssued,
    make_event: MakeEvent,
    link: str,
) -> None:
    """With BLUME_SMTP_URL set, the worker sends over SMTP and emits share.notification.sent."""
    with_smtp = settings.model_copy(update={"smtp_url": smtp_server.url})
    pipeline = make_pipeline(with_smtp)
    assert await pipeline.deliver(make_event(make_issued())) == "ack"

    (received,) = await smtp_server.wait_for(1)
    text = received.get_body(("plain",))
    assert isinstance(text, EmailMessage)
    assert link in text.get_content()
    (published,) = pipeline.events()
    assert published["type"] == "share.notification.sent"
    assert published["data"]["message_id"] == received["Message-ID"]


class PeerCountingSink:
    """An SMTP server handler that records the client address (one per connection) of each
    accepted message."""

    def __init__(self) -> None:
        self.peers: list[Any] = []

    async def handle_DATA(self, _server: Any, session: Any, _envelope: Any) -> str:
        self.peers.append(session.peer)
        return "250 2.0.0 OK"


async def test_smtp_mailer_sends_consecutive_emails_over_one_connection(
    make_issued: MakeIssued, link: str
) -> None:
    """Three emails one after the other reach the server over a single kept connection."""
    sink = PeerCountingSink()
    port = closed_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        mailer = SmtpMailer(f"smtp://127.0.0.1:{port}", timeout=5)
        for _ in range(3):
            await mailer.send(link_email(make_issued(), link))
        await mailer.close()
    finally:
        controller.stop()
    assert len(sink.peers) == 3
    assert len(set(sink.peers)) == 1


async def test_smtp_mailer_reaches_a_restarted_server_on_a_new_connection(
    smtp_server: Any, make_issued: MakeIssued, link: str
) -> None:
    """A kept connection the server dropped (it restarted) is not reused: the next email
    arrives at the restarted server, or at worst the one after (the first is retried)."""
    mailer = SmtpMailer(smtp_server.url, timeout=5)
    await mailer.send(link_email(make_issued(), link))
    smtp_server.stop()
    smtp_server.start()
    try:
        await mailer.send(link_email(make_issued(), link))
    except MailUnavailable:
        await mailer.send(link_email(make_issued(), link))
    await smtp_server.wait_for(2)
    await mailer.close()
    assert len(smtp_server.messages) == 2


class QuitCountingSink(PeerCountingSink):
    """Also counts the QUITs the server receives."""

    def __init__(self) -> None:
        super().__init__()
        self.quits = 0

    async def handle_QUIT(self, server: Any, _session: Any, _envelope: Any) -> str:
        self.quits += 1
        return "221 Bye"


async def test_stopping_the_notifier_says_quit_on_its_kept_connection(
    make_issued: MakeIssued, link: str
) -> None:
    """The notifier built over SMTP owns a component that, when the runtime stops it, closes
    the mailer's kept connection with a QUIT rather than dropping it."""
    sink = QuitCountingSink()
    port = closed_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings = Settings(smtp_url=f"smtp://127.0.0.1:{port}")
        mailer = SmtpMailer(f"smtp://127.0.0.1:{port}", timeout=5)
        service = build(settings, mailer)
        await mailer.send(link_email(make_issued(), link))
        assert sink.quits == 0
        for component in service.components:
            await component.stop()
    finally:
        controller.stop()
    assert len(sink.peers) == 1
    assert sink.quits == 1


class RawSink:
    """An SMTP server handler that keeps each message's bytes as received, and its envelope."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 OK"


async def sent_through_smtp(
    message: Message, **controller_options: Any
) -> tuple[str, list[str], bytes]:
    """``message`` sent by the SmtpMailer to a real aiosmtpd server: its envelope and bytes."""
    sink = RawSink()
    port = closed_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **controller_options)
    controller.start()
    try:
        mailer = SmtpMailer(f"smtp://127.0.0.1:{port}", timeout=5)
        await mailer.send(message)
        await mailer.close()
    finally:
        controller.stop()
    [received] = sink.received
    return received


async def test_a_french_email_arrives_as_built_with_its_encoded_words(
    make_issued: MakeIssued, link: str
) -> None:
    """fr-CA, accented names: MAIL FROM and RCPT TO as the From and To; CRLF, ASCII bytes
    whose Subject, To and Reply-To are RFC 2047 encoded words; every header read back
    decoded; both parts UTF-8 quoted-printable, decoding to the rendered bodies."""
    issued = make_issued(locale="fr-CA", organisation="Hôpital Démo")
    issued = issued.model_copy(
        update={
            "recipient": issued.recipient.model_copy(update={"name": "Dr. Zoé Côté"}),
            "sender": issued.sender.model_copy(update={"name": "Dr. Hélène Dubé"}),
        }
    )
    message_id = link_message_id(issued.share_id, MAIL_FROM)
    sent_at = datetime(2026, 11, 25, 14, 0, 5, tzinfo=UTC)
    built = build_link_email(
        issued,
        link,
        mail_from=MAIL_FROM,
        message_id=message_id,
        sent_at=sent_at,
        sender_domains=["demo-hospital.example"],
    )
    mail_from, recipients, data = await sent_through_smtp(built)

    assert (mail_from, recipients) == ("no-reply@blume-share.example", [issued.recipient.email])
    assert data.isascii()
    assert b"\n" not in data.replace(b"\r\n", b"")
    head = data.split(b"\r\n\r\n")[0].decode()
    for field in ("Subject", "To", "Reply-To"):
        assert re.search(rf"^{field}: =\?utf-8\?[bq]\?", head, re.MULTILINE | re.IGNORECASE), field
    received = message_from_bytes(data, policy=policy.default)
    assert received["From"] == MAIL_FROM
    assert received["To"].addresses[0].display_name == "Dr. Zoé Côté"
    assert received["To"].addresses[0].addr_spec == issued.recipient.email
    assert received["Reply-To"].addresses[0].display_name == "Dr. Hélène Dubé"
    assert received["Subject"] == (
        "Dr. Hélène Dubé (Hôpital Démo) a partagé un examen d\u2019imagerie avec vous"
    )
    assert received["Message-ID"] == message_id
    assert parsedate_to_datetime(received["Date"]) == sent_at
    assert (received["MIME-Version"], received["Content-Language"]) == ("1.0", "fr-CA")
    assert received["Auto-Submitted"] == "auto-generated"
    assert received["X-Auto-Response-Suppress"] == "All"
    rendered = render_link_email(issued, link)
    parts = list(received.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    for part, body in zip(parts, (rendered.text, rendered.html), strict=True):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert part.get_content().replace("\r\n", "\n") == body + "\n"
    assert "28 novembre 2026 à 9 h 00 EST" in parts[0].get_content()


async def test_an_internationalised_domain_is_sent_with_smtputf8() -> None:
    """An address outside ASCII goes out as before: SMTPUTF8 on MAIL FROM, the address as
    UTF-8 in RCPT TO and in the To header, to a server that offers SMTPUTF8."""
    message = alternative_email(
        {"From": Mailbox("Blume", "no-reply@blume.example"), "To": Mailbox("José", "jose@cé.ca")},
        {"Subject": "Un examen partagé", "Message-ID": "<a@blume.example>"},
        "texte\n",
        "<p>texte</p>\n",
    )
    mail_from, recipients, data = await sent_through_smtp(message, enable_SMTPUTF8=True)
    assert (mail_from, recipients) == ("no-reply@blume.example", ["jose@cé.ca"])
    received = message_from_string(data.decode(), policy=policy.default)
    assert received["To"].addresses[0].addr_spec == "jose@cé.ca"
    assert received["Subject"] == "Un examen partagé"


async def test_a_display_name_holding_addresses_adds_no_recipient() -> None:
    """The envelope comes from the addresses the email was built from, not from its headers:
    an accented name holding "<address>, " reaches one RCPT TO, and the To header reads
    back as that one address with the name intact."""
    name = "Zoé <mallory@attacker.example>, Eve"
    message = alternative_email(
        {"From": Mailbox("Blume", "no-reply@blume.example"), "To": Mailbox(name, "z@c.example")},
        {"Subject": "s", "Message-ID": "<a@blume.example>"},
        "t\n",
        "<p>t</p>\n",
    )
    mail_from, recipients, data = await sent_through_smtp(message)
    assert (mail_from, recipients) == ("no-reply@blume.example", ["z@c.example"])
    [to] = message_from_bytes(data, policy=policy.default)["To"].addresses
    assert (to.display_name, to.addr_spec) == (name, "z@c.example")
