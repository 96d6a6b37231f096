"""Route-test harness: the gateway app on a migrated SQLite database, FastAPI's TestClient,
a transport that records what the outbox relay publishes, a clock the test moves, and a
fake OpenID provider served in-process (httpx over ASGI)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from blume_access_gateway.app import create_app
from blume_access_gateway.gateway import Gateway
from blume_access_gateway.settings import GatewaySettings
from blume_link_issuer.models import SecureLink
from blume_link_issuer.tokens import new_token, token_hash
from blume_publisher.models import AccountStatus, PatientAccount, RecordEntry
from blume_runtime.db import Database
from blume_runtime.outbox import OutboxRelay
from blume_runtime.settings import Settings
from blume_runtime.testing import FakeClock, RecordingTransport
from blume_share_dispatcher.models import Share, ShareState
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from services.access_gateway.tests.fake_idp import FakeIdentityProvider

REPO = Path(__file__).resolve().parents[3]
PUBLIC = "https://share.test"
CLIENT_IP = "203.0.113.7"
USER_AGENT = "Mozilla/5.0 (route test)"
SSO_ISSUER = "https://idp.test"
PORTAL_ISSUER = "https://portal-idp.test"
SSO_SECRET_ENV = "BLUME_TEST_SSO_SECRET"


POLICY = f"""
tenants:
  open-clinic:
    display_name: Open Clinic
    recipient_auth: none
    viewer_url: https://viewer.test/view?site=1
  otp-hospital:
    display_name: OTP Hospital
    recipient_auth: email_otp
    link_max_uses: 2
    viewer_url: https://viewer.test/view
  sso-hospital:
    display_name: SSO Hospital
    recipient_auth: sso
    viewer_url: https://viewer.test/view
    sso:
      issuer: {SSO_ISSUER}
      client_id: blume-share
      client_secret_env: {SSO_SECRET_ENV}
      allowed_domains: [partner.example]
  trusting-sso-hospital:
    display_name: Trusting SSO Hospital
    recipient_auth: sso
    viewer_url: https://viewer.test/view
    sso:
      issuer: {SSO_ISSUER}
      client_id: blume-share
      client_secret_env: {SSO_SECRET_ENV}
      trust_unverified_email: true
"""


@dataclass
class Harness:
    """The app, its database, what it published, and ways to make links and shares."""

    db: Database
    gateway: Gateway
    transport: RecordingTransport
    clock: FakeClock
    idp: FakeIdentityProvider
    portal_idp: FakeIdentityProvider
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine: Any) -> Any:
        """Run a coroutine on the harness's loop (the one the database engine lives on)."""
        return self.loop.run_until_complete(coroutine)

    def client(self, **kwargs: Any) -> TestClient:
        return TestClient(
            create_app(self.gateway),
            base_url=PUBLIC,
            client=(kwargs.pop("ip", CLIENT_IP), 50000),
            headers={"user-agent": USER_AGENT},
            follow_redirects=False,
            **kwargs,
        )

    def add_link(
        self,
        tenant: str = "open-clinic",
        *,
        auth: str = "none",
        max_uses: int | None = None,
        expires_in: timedelta = timedelta(hours=72),
        locale: str = "en-CA",
        recipient_email: str = "bob.jones@clinic.example",
        share_state: ShareState = ShareState.COMPLETED,
    ) -> tuple[str, SecureLink]:
        token = new_token()
        share_id = f"shr_{uuid.uuid4().hex}"
        link = SecureLink(
            link_id=f"lnk_{uuid.uuid4().hex}",
            share_id=share_id,
            tenant_id=tenant,
            token_hash=token_hash(token),
            correlation_id=f"corr-{uuid.uuid4().hex[:8]}",
            recipient_email=recipient_email,
            recipient_name="Dr. Bob Jones",
            sender_name="Dr. Alice Smith",
            sender_email="alice@demo-hospital.example",
            organisation="Demo Hospital",
            locale=locale,
            study_instance_uid="1.2.840.113619.2.55.3.604688119.868.1234567890.123",
            recipient_auth=auth,
            max_uses=max_uses,
            expires_at=self.clock.now + expires_in,
            created_at=self.clock.now,
        )
        share = Share(
            share_id=share_id,
            tenant_id=tenant,
            method="external_link",
            state=share_state,
            correlation_id=link.correlation_id,
            request_source="/omegaai/test",
            request_id=str(uuid.uuid4()),
        )

        async def insert() -> None:
            async with self.db.transaction() as session:
                session.add(share)
                session.add(link)

        self.run(insert())
        return token, link

    def set_share_state(self, share_id: str, state: ShareState) -> None:
        async def update() -> None:
            async with self.db.transaction() as session:
                share = await session.get(Share, share_id)
                assert share is not None
                share.state = state
                session.add(share)

        self.run(update())

    def revoke_link(self, link_id: str) -> None:
        async def update() -> None:
            async with self.db.transaction() as session:
                link = await session.get(SecureLink, link_id)
                assert link is not None
                link.revoked_at = self.clock.now
                session.add(link)

        self.run(update())

    def add_patient(
        self,
        blume_patient_id: str = "bp-0001",
        *,
        tenant: str = "open-clinic",
        locale: str = "en-CA",
        status: AccountStatus = AccountStatus.ACTIVE,
        withhold_portal: bool = False,
    ) -> PatientAccount:
        account = PatientAccount(
            blume_patient_id=blume_patient_id,
            tenant_id=tenant,
            mrn=f"MRN-{blume_patient_id}",
            email=f"{blume_patient_id}@patients.example",
            locale=locale,
            email_notifications=True,
            status=status,
            withhold_portal=withhold_portal,
        )

        async def insert() -> None:
            async with self.db.transaction() as session:
                session.add(account)

        self.run(insert())
        return account

    def add_entry(
        self,
        blume_patient_id: str = "bp-0001",
        *,
        tenant: str = "open-clinic",
        hidden: bool = False,
        share_state: ShareState = ShareState.COMPLETED,
    ) -> RecordEntry:
        share_id = f"shr_{uuid.uuid4().hex}"
        entry = RecordEntry(
            entry_id=f"ent_{uuid.uuid4().hex}",
            blume_patient_id=blume_patient_id,
            tenant_id=tenant,
            study_instance_uid=f"1.2.3.{uuid.uuid4().int % 10**9}",
            share_id=share_id,
            imaging_study={
                "resourceType": "ImagingStudy",
                "status": "available",
                "started": "2026-11-20",
                "description": "CT CHEST W CONTRAST",
                "modality": [{"coding": [{"code": "CT"}]}],
            },
            hidden_at=self.clock.now if hidden else None,
        )
        share = Share(
            share_id=share_id,
            tenant_id=tenant,
            method="blume",
            state=share_state,
            correlation_id=f"corr-{uuid.uuid4().hex[:8]}",
            request_source="/omegaai/test",
            request_id=str(uuid.uuid4()),
        )

        async def insert() -> None:
            async with self.db.transaction() as session:
                session.add(share)
                session.add(entry)

        self.run(insert())
        return entry

    def rows(self, model: Any) -> list[Any]:
        from sqlmodel import select

        async def fetch() -> list[Any]:
            async with self.db.transaction() as session:
                return list((await session.exec(select(model))).all())

        return self.run(fetch())  # type: ignore[no-any-return]


def make_harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **config: Any
) -> Iterator[Harness]:
    from blume_share.schema import upgrade

    monkeypatch.setenv(SSO_SECRET_ENV, "sso-client-secret")
    state = tmp_path / "state"
    state.mkdir()
    url = f"sqlite:///{state / 'gateway.db'}"
    upgrade(url)
    policy = tmp_path / "tenants.yaml"
    policy.write_text(POLICY)
    settings = Settings(
        _env_file=None,
        state_dir=state,
        tenant_policy_file=policy,
        public_base_url=PUBLIC,
        portal_base_url=f"{PUBLIC}/blume",
        token_sealing_key=Fernet.generate_key().decode(),
    )
    options: dict[str, Any] = {
        "gateway_secret_key": "route-test-secret-" + "x" * 32,
        "help_dir": REPO / "docs" / "help",
        "portal_oidc_issuer": PORTAL_ISSUER,
        "portal_oidc_client_id": "blume-portal",
        "portal_oidc_client_secret": "portal-secret",
        "rate_limit_per_ip": "1000/minute",
        "rate_limit_per_token": "1000/minute",
        "rate_limit_code_requests": "100/minute",
        **config,
    }
    gateway_settings = GatewaySettings(_env_file=None, **options)
    loop = asyncio.new_event_loop()
    db = Database(url)
    transport = RecordingTransport()
    clock = FakeClock()
    idp = FakeIdentityProvider(
        SSO_ISSUER, client_id="blume-share", client_secret="sso-client-secret"
    )
    portal_idp = FakeIdentityProvider(
        PORTAL_ISSUER, client_id="blume-portal", client_secret="portal-secret"
    )
    http = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: _route_to_idp(request, idp, portal_idp))
    )
    gateway = Gateway.build(
        settings,
        db,
        OutboxRelay(db, transport),
        config=gateway_settings,
        http=http,
        clock=clock,
    )
    harness = Harness(db, gateway, transport, clock, idp, portal_idp, loop)
    try:
        yield harness
    finally:
        loop.run_until_complete(gateway.close())
        loop.run_until_complete(db.dispose())
        loop.close()


CSRF_FIELD = re.compile(
    r'<form method="post" action="([^"]*)"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"'
)


def forms(html: str) -> dict[str, str]:
    """The page's forms: action URL to its CSRF token."""
    return dict(CSRF_FIELD.findall(html))


def csrf_for(html: str, action: str) -> str:
    return forms(html)[action]


def _route_to_idp(
    request: httpx.Request, idp: FakeIdentityProvider, portal_idp: FakeIdentityProvider
) -> httpx.Response:
    for provider in (idp, portal_idp):
        if str(request.url).startswith(provider.issuer):
            return provider.handle(request)
    return httpx.Response(404)


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    yield from make_harness(tmp_path, monkeypatch)
