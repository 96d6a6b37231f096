"""The SMTP server the notifier sends to: an aiosmtpd server that the suite can take down.

During an outage nothing listens on the port, so connections are refused, as when a mail
relay is down. Every accepted message is kept as its Message-ID, envelope recipients and
the moment it was accepted (the handler runs on aiosmtpd's thread, hence the lock).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser
from typing import Any

from aiosmtpd.controller import Controller

from tests.faults.processes import free_port


@dataclass(frozen=True, slots=True)
class ReceivedEmail:
    message_id: str
    recipients: tuple[str, ...]
    accepted_at: float
    """``time.monotonic()`` when the server said 250 to the message."""


class MailServer:
    def __init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self._received: list[ReceivedEmail] = []
        self._parser = BytesHeaderParser(policy=policy.default)
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        content = envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        message_id = str(self._parser.parsebytes(raw).get("Message-ID", "")).strip()
        recipients = tuple(str(address).lower() for address in envelope.rcpt_tos)
        with self._lock:
            self._received.append(ReceivedEmail(message_id, recipients, time.monotonic()))
        return "250 2.0.0 OK"

    def accept(self) -> None:
        """Listen (again) on the same port."""
        if self._controller is None:
            self._controller = Controller(
                self, hostname="127.0.0.1", port=self.port, server_hostname="chaos-smtp.localhost"
            )
            self._controller.start()

    def refuse(self) -> None:
        """Stop listening: from now on every connection is refused."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def received(self) -> list[ReceivedEmail]:
        with self._lock:
            return list(self._received)
