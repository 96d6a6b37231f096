"""The mailer port and its two adapters: SMTP (production) and a mail drop folder (embedded).

Errors are sorted into two kinds the handler acts on: ``MailRejected`` (the server refused
this message for good: retrying cannot help) and ``MailUnavailable`` (the server or the
network is not there right now: retry later). Their messages never carry an email address.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import time
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
from blume_runtime.logging import scrub_text
from blume_runtime.settings import Settings
from blume_runtime.tracing import span

from blume_notifier.mime import OutgoingEmail, wire_bytes

DEFAULT_PORTS: Final = {"smtp": 25, "smtps": 465}
_UNSAFE_FILE_CHARACTERS: Final = re.compile(r"[^A-Za-z0-9._-]")


class MailError(Exception):
    """Sending failed; the message is safe to log (addresses are scrubbed)."""

    def __init__(self, description: str) -> None:
        super().__init__(scrub_text(description))


class MailRejected(MailError):  # noqa: N818 - the name other workers and docs use
    """Permanent: the server refused the message (SMTP 5xx). Do not retry."""


class MailUnavailable(MailError):  # noqa: N818 - the name other workers and docs use
    """Transient: connection refused, timeout, disconnect, or a 4xx reply. Retry later."""


class Mailer(Protocol):
    async def send(self, message: Message) -> None:
        """Hand ``message`` to the next hop; return once it accepted it, or raise MailError."""


@dataclass(frozen=True, slots=True)
class SmtpEndpoint:
    """Where and how to connect, parsed from ``smtp://[user:pass@]host[:port][?starttls=...]``.

    ``smtps://`` is implicit TLS (port 465). For ``smtp://``, ``starttls=true`` requires the
    upgrade, ``starttls=false`` forbids it, and leaving it out upgrades when the server
    offers STARTTLS (aiosmtplib's default).
    """

    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool | None

    @classmethod
    def parse(cls, url: str) -> SmtpEndpoint:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(f"SMTP URL scheme must be smtp or smtps, not {parts.scheme!r}")
        if not parts.hostname:
            raise ValueError("SMTP URL needs a host")
        use_tls = parts.scheme == "smtps"
        start_tls: bool | None = None
        if values := parse_qs(parts.query).get("starttls"):
            flag = values[-1].lower()
            if flag not in {"true", "false"}:
                raise ValueError("starttls must be true or false")
            start_tls = flag == "true"
            if use_tls and start_tls:
                raise ValueError("smtps:// is already TLS; starttls=true cannot apply")
        if use_tls:
            start_tls = False
        return cls(
            host=parts.hostname,
            port=parts.port or DEFAULT_PORTS[parts.scheme],
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            use_tls=use_tls,
            start_tls=start_tls,
        )

    def __repr__(self) -> str:
        # The password must not end up in a log line or a traceback.
        return (
            f"SmtpEndpoint(host={self.host!r}, port={self.port}, "
            f"authenticated={self.username is not None}, use_tls={self.use_tls}, "
            f"start_tls={self.start_tls})"
        )


class SmtpMailer:
    """Sends over a few kept-open connections; ``timeout`` bounds every SMTP step.

    Opening a connection (TCP, greeting, EHLO, maybe STARTTLS and AUTH) costs more than
    sending one email, so a connection that sent a message is kept for the next, up to
    ``pool_size`` at once (the notifier handles several deliveries concurrently). One that
    failed in any way is closed, never reused; one idle longer than ``max_idle_seconds``
    (well under the five minutes a server may wait, RFC 5321) is closed rather than found
    dead. A server gone since, or a connection dropped, is an error like any other: the
    delivery is retried, on a new connection.
    """

    def __init__(
        self, url: str, timeout: float, *, pool_size: int = 4, max_idle_seconds: float = 30.0
    ) -> None:
        self.endpoint = SmtpEndpoint.parse(url)
        self.timeout = timeout
        self._max_idle = max_idle_seconds
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []

    def __repr__(self) -> str:
        return f"SmtpMailer({self.endpoint!r}, timeout={self.timeout})"

    async def send(self, message: Message) -> None:
        endpoint = self.endpoint
        try:
            with span("smtp send", {"server.port": endpoint.port}, client=True):
                await self._send(message)
        except aiosmtplib.SMTPAuthenticationError as error:
            # A 535 is about our credentials, not this message: every message would fail the
            # same way until ops fix the configuration, so retry rather than fail the share.
            raise MailUnavailable(f"SMTP authentication failed: {error.code}") from error
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refused.code for refused in error.recipients]
            description = "recipient refused: " + "; ".join(
                f"{refused.code} {refused.message}" for refused in error.recipients
            )
            if codes and all(_is_permanent(code) for code in codes):
                raise MailRejected(description) from error
            raise MailUnavailable(description) from error
        except aiosmtplib.SMTPResponseException as error:
            description = f"{error.code} {error.message}"
            if _is_permanent(error.code):
                raise MailRejected(description) from error
            raise MailUnavailable(description) from error
        except aiosmtplib.SMTPTimeoutError as error:
            raise MailUnavailable(f"SMTP timed out after {self.timeout}s") from error
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            # Refused or dropped connections, DNS and TLS failures, STARTTLS not offered.
            raise MailUnavailable(f"SMTP unavailable: {type(error).__name__}: {error}") from error

    async def _send(self, message: Message) -> None:
        async with self._slots:
            client = self._take_idle() or await self._connect()
            try:
                await _transmit(client, message)
            except BaseException:
                _abandon(client)
                raise
            self._idle.append((client, time.monotonic()))

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        while self._idle:
            client, since = self._idle.pop()
            if client.is_connected and time.monotonic() - since < self._max_idle:
                return client
            _abandon(client)
        return None

    async def _connect(self) -> aiosmtplib.SMTP:
        endpoint = self.endpoint
        client = aiosmtplib.SMTP(
            hostname=endpoint.host,
            port=endpoint.port,
            username=endpoint.username,
            password=endpoint.password,
            use_tls=endpoint.use_tls,
            start_tls=endpoint.start_tls,
            timeout=self.timeout,
        )
        try:
            await client.connect()
        except BaseException:
            _abandon(client)
            raise
        return client

    async def close(self) -> None:
        """Say QUIT on every kept connection (a shutdown; sending again reconnects)."""
        idle, self._idle = self._idle, []
        for client, _since in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                _abandon(client)


async def _transmit(client: aiosmtplib.SMTP, message: Message) -> None:
    if not isinstance(message, OutgoingEmail):
        # An EmailMessage (an internationalised address, see mime.py): aiosmtplib takes the
        # envelope from its headers and flattens it, with SMTPUTF8 when the address needs it.
        await client.send_message(message)
        return
    # Flattened once, here; 7-bit clean, so no BODY=8BITMIME and no SMTPUTF8 to ask for.
    await client.sendmail(message.envelope_sender, message.envelope_recipients, wire_bytes(message))


def _abandon(client: aiosmtplib.SMTP) -> None:
    """Drop a connection without a word to the server: it failed, or went stale."""
    if client.is_connected:
        client.close()


def _is_permanent(code: int) -> bool:
    return 500 <= code < 600


class MailDropMailer:
    """The embedded default: each message becomes one ``.eml`` file in ``directory``.

    Written to a temporary file and renamed, so a reader never sees half a message; named
    after the Message-ID, so sending the same message again replaces it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __repr__(self) -> str:
        return f"MailDropMailer({str(self.directory)!r})"

    def path_for(self, message: Message) -> Path:
        message_id = str(message.get("Message-ID", "")).strip().strip("<>")
        if not message_id:
            raise ValueError("a dropped message needs a Message-ID to be named after")
        return self.directory / (_UNSAFE_FILE_CHARACTERS.sub("_", message_id) + ".eml")

    async def send(self, message: Message) -> None:
        target = self.path_for(message)
        content = wire_bytes(message)
        try:
            await asyncio.to_thread(_write_atomically, target, content)
        except OSError as error:
            raise MailUnavailable(f"mail drop not writable: {type(error).__name__}") from error


def _write_atomically(target: Path, content: bytes) -> None:
    # Owner-only, like each file in it: a dropped email holds a live link.
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkstemp creates the file 0600: it holds a live link, so only this user may read it.
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def mailer_from_settings(settings: Settings) -> Mailer:
    """SMTP when ``BLUME_SMTP_URL`` is set, else the mail drop folder of the embedded default."""
    if settings.smtp_url:
        return SmtpMailer(settings.smtp_url, timeout=settings.smtp_timeout_seconds)
    return MailDropMailer(settings.mail_drop_dir)
