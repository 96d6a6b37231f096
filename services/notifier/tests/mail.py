"""Reading a built email as its recipient's mail client would."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage, Message

from blume_notifier.mime import wire_bytes


def received(message: Message) -> EmailMessage:
    """``message`` flattened as the mailers send it, then parsed back with the default policy."""
    parsed = message_from_bytes(wire_bytes(message), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def bodies(message: Message) -> str:
    """Every text part of ``message``, decoded, one after the other."""
    return "\n".join(
        str(part.get_content())
        for part in received(message).walk()
        if part.get_content_maintype() == "text"
    )
