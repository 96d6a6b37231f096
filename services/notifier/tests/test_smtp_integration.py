"""SmtpMailer and the notifier against a real SMTP server (aiosmtpd on a free local port)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import ShareLinkIssued
from blume_notifier.mailer import MailRejected, MailUnavailable, SmtpMailer
from blume_notifier.render import build_link_email, link_message_id
from blume_notifier.service import build
from blume_runtime.settings import Settings

pytestmark = pytest.mark.integration

MakeIssued = Callable[..., ShareLinkIssued]
MakeEvent = Callable[..., CloudEvent[ShareLinkIssued]]
MAIL_FROM = "Blume Share <no-reply@blume-share.example>"


def link_email(issued: ShareLinkIssued, link: str) -> EmailMessage:
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
