"""link_issuer: a 256-bit token reaches only the sealed event; the store keeps its hash."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from blume_contracts.envelope import CloudEvent, now
from blume_contracts.events import Recipient, Sender, ShareLinkRequested
from blume_contracts.urls import link_url
from blume_link_issuer.models import SecureLink
from blume_link_issuer.service import build
from blume_link_issuer.tokens import new_token
from blume_runtime.db import Database, OutboxMessage
from blume_runtime.sealing import Sealer
from blume_runtime.service import HandlerContext
from blume_runtime.settings import Settings
from blume_runtime.testing import NullLog
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlmodel import select

SHARE = "shr_" + "b" * 32
TOKEN = re.compile(r"^https://share\.example/s/([A-Za-z0-9_-]{43})$")


def test_tokens_are_43_url_safe_characters_and_unique() -> None:
    """Each token is 256 bits of URL-safe base64 without padding, and never repeats."""
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", token) for token in tokens)


def test_link_carries_the_token_and_nothing_else() -> None:
    """The link is the public base (its trailing slash dropped by the settings), /s/, the token."""
    settings = Settings(public_base_url="https://share.example/")
    assert link_url(settings.public_base_url, "abc") == "https://share.example/s/abc"


def request_event() -> CloudEvent[ShareLinkRequested]:
    return CloudEvent[ShareLinkRequested](
        id="req-1",
        source="/blume-share/share_dispatcher",
        type="share.link.requested",
        time=now(),
        tenantid="demo-hospital",
        correlationid="corr-1",
        data=ShareLinkRequested(
            share_id=SHARE,
            tenant_id="demo-hospital",
            study_instance_uid="1.2.840.1",
            recipient=Recipient(name="Dr. Bob Jones", email="bob@clinic.example"),
            sender=Sender(user_id="u-1", name="Dr. Alice Smith", email="alice@demo.example"),
            organisation="Demo Hospital",
            message=None,
            locale="fr-CA",
            expires_at=now() + timedelta(hours=72),
        ),
    )


async def test_minting_stores_the_hash_and_seals_the_link(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """The store and the outbox never hold the token; the sealed link opens to it."""
    key = Fernet.generate_key().decode()
    settings = Settings(
        state_dir=tmp_path,
        public_base_url="https://share.example",
        token_sealing_key=SecretStr(key),
        amqp_url=SecretStr("amqp://unused/"),
    )
    service = build(settings)
    route = service.route("share.link.requested")
    assert route is not None
    event = request_event()
    async with sqlite_db.transaction() as session:
        ctx = HandlerContext(
            service="link_issuer", origin=event, session=session, attempt=1, log=NullLog()
        )
        await route[1](event, ctx)

    async with sqlite_db.transaction() as session:
        stored = (await session.exec(select(SecureLink))).one()
        outbox = (await session.exec(select(OutboxMessage))).one()
    issued = CloudEvent[Any].model_validate_json(outbox.body)
    link = Sealer([key.encode()]).unseal(issued.data["sealed_link"])
    match = TOKEN.match(link)
    assert match is not None
    token = match.group(1)
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(stored.model_dump())
    assert token not in outbox.body.decode()
    assert link not in outbox.body.decode()
    assert issued.data["locale"] == "fr-CA"
    assert stored.expires_at == event.data.expires_at
