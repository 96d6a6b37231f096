"""Route-test harness: the gateway app on a migrated SQLite database, FastAPI's TestClient,
a transport that records what the outbox relay publishes, a clock the test moves, and a
fake OpenID provider served in-process (httpx over ASGI).

Over 400 lines on purpose: it is one harness (``Harness`` and ``make_harness``) that every
gateway test file shares; its seeding helpers (links, revocations, patients, record entries,
share status) feed the projections through their own event handlers, and split across
modules they would drift apart from the app they are wired to.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from blume_access_gateway.app import create_app
from blume_access_gateway.freshness import Staleness
from blume_access_gateway.gateway import Gateway
from blume_access_gateway.models import ProjectedEntry, ProjectedLink
from blume_access_gateway.projections import (
    apply_account,
    apply_link_issued,
    apply_published,
    apply_revoked,
)
from blume_access_gateway.settings import GatewaySettings
from blume_access_gateway.share_status import apply_status
from blume_contracts.envelope import CloudEvent
from blume_contracts.events import (
    PatientAccountUpdated,
    Recipient,
    Sender,
    ShareBlumePublished,
    ShareLinkIssued,
    ShareRevoked,
    StudySummary,
)
from blume_contracts.sensitivity import fingerprint
from blume_contracts.tokens import token_hash
from blume_runtime.db import Database
from blume_runtime.outbox import OutboxRelay
from blume_runtime.settings import Settings
from blume_runtime.testing import FakeClock, RecordingTransport
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
  west-clinic:
    display_name: West Clinic
    recipient_auth: none
    time_zone: America/Vancouver
    viewer_url: https://viewer.test/view
  brief-clinic:
    display_name: Brief Clinic
    recipient_auth: none
    access_session_minutes: 10
    viewer_url: https://viewer.test/view
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
  staff-sso-hospital:
    display_name: Staff SSO Hospital
    recipient_auth: email_otp
    link_expiry_max_hours: 48
    link_expiry_default_hours: 24
    viewer_url: https://viewer.test/view
    sender_auth: sso
    staff_sso:
      issuer: {SSO_ISSUER}
      client_id: blume-share
      client_secret_env: {SSO_SECRET_ENV}
  pacs-clinic:
    display_name: PACS Clinic
    recipient_auth: none
    dicomweb_url: https://pacs.test/dicom-web
  external-viewer-clinic:
    display_name: External Viewer Clinic
    recipient_auth: none
    dicomweb_url: https://pacs.test/dicom-web
    external_viewer_url: https://ohif.test/viewer?site=2
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


APPLY: dict[str, Any] = {
    "share.link.issued": apply_link_issued,
    "share.revoked": apply_revoked,
    "patient.account.updated": apply_account,
    "share.blume.published": apply_published,
}


@dataclass
class SettableFreshness:
    """The projections' freshness as the test sets it: events are fed synchronously here."""

    staleness: Staleness | None = None
    applied_count: int = 0

    async def stale(self) -> Staleness | None:
        return self.staleness

    def applied(self, produced_at: datetime) -> None:
        """Only counted (what the viewer's grant cache watches): the test decides the rest."""
        self.applied_count += 1


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
    freshness: SettableFreshness

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

    def feed(
        self,
        event_type: str,
        data: Any,
        *,
        tenant: str,
        correlation_id: str,
        apply: Any = None,
    ) -> None:
        """Apply an event to the gateway's projections (``apply``: that one only), as its
        worker does."""
        event = CloudEvent[Any](
            id=str(uuid.uuid4()),
            source="/blume-share/route-test",
            type=event_type,
            time=datetime.now(UTC),
            tenantid=tenant,
            correlationid=correlation_id,
            data=data,
        )

        applier = apply or APPLY[event_type]

        async def applied() -> None:
            async with self.db.transaction() as session:
                await applier(session, event)
            self.freshness.applied(event.time)

        self.run(applied())

    def feed_status(self, event_type: str, data: Any, *, tenant: str) -> None:
        """Apply an event to the share-status projection, as the gateway's worker does."""
        self.feed(event_type, data, tenant=tenant, correlation_id="corr-status", apply=apply_status)

    def add_link(
        self,
        tenant: str = "open-clinic",
        *,
        auth: str = "none",
        max_uses: int | None = None,
        expires_in: timedelta = timedelta(hours=72),
        locale: str = "en-CA",
        recipient_email: str = "bob.jones@clinic.example",
        share_id: str | None = None,
        message: str | None = None,
        study_uid: str | None = None,
    ) -> tuple[str, ProjectedLink]:
        """A link as ``share.link.issued`` announces it; returns its token and the link."""
        token = secrets.token_urlsafe(32)
        issued = ShareLinkIssued(
            share_id=share_id or f"shr_{uuid.uuid4().hex}",
            link_id=f"lnk_{uuid.uuid4().hex}",
            token_fingerprint=fingerprint(token),
            sealed_link="sealed",
            expires_at=self.clock.now + expires_in,
            recipient=Recipient(name="Dr. Bob Jones", email=recipient_email),
            sender=Sender(
                user_id="u-1", name="Dr. Alice Smith", email="alice@demo-hospital.example"
            ),
            organisation="Demo Hospital",
            locale=locale,  # type: ignore[arg-type]
            token_hash=token_hash(token),
            recipient_auth=auth,  # type: ignore[arg-type]
            max_uses=max_uses,
            message=message,
            study_instance_uid=study_uid,
        )
        correlation_id = f"corr-{uuid.uuid4().hex[:8]}"
        self.feed("share.link.issued", issued, tenant=tenant, correlation_id=correlation_id)
        [link] = [row for row in self.rows(ProjectedLink) if row.link_id == issued.link_id]
        return token, link

    def revoke(self, share_id: str, *, tenant: str = "open-clinic") -> None:
        """The dispatcher's ``share.revoked`` for the share."""
        revoked = ShareRevoked(
            share_id=share_id,
            method="external_link",
            requested_by="route-test",
            revoked_at=self.clock.now,
        )
        self.feed("share.revoked", revoked, tenant=tenant, correlation_id="corr-revoke")

    def revoke_link(self, link_id: str) -> None:
        [link] = [row for row in self.rows(ProjectedLink) if row.link_id == link_id]
        self.revoke(link.share_id, tenant=link.tenant_id)

    def add_patient(
        self,
        blume_patient_id: str = "bp-0001",
        *,
        tenant: str = "open-clinic",
        locale: str = "en-CA",
        active: bool = True,
        withhold_portal: bool = False,
    ) -> None:
        """The account as blume_publisher's ``patient.account.updated`` announces it."""
        update = PatientAccountUpdated(
            blume_patient_id=blume_patient_id,
            tenant_id=tenant,
            mrn=f"MRN-{blume_patient_id}",
            email=f"{blume_patient_id}@patients.example",
            locale=locale,  # type: ignore[arg-type]
            email_notifications=True,
            status="active" if active else "inactive",
            withhold_portal=withhold_portal,
            withhold_external_links=False,
            updated_at=datetime.now(UTC),
        )
        self.feed("patient.account.updated", update, tenant=tenant, correlation_id="corr-import")

    def add_entry(
        self,
        blume_patient_id: str = "bp-0001",
        *,
        tenant: str = "open-clinic",
        revoked: bool = False,
    ) -> ProjectedEntry:
        """An entry as ``share.blume.published`` announces it (its share revoked if asked)."""
        published = ShareBlumePublished(
            share_id=f"shr_{uuid.uuid4().hex}",
            blume_patient_id=blume_patient_id,
            entry_id=f"ent_{uuid.uuid4().hex}",
            newly_published=True,
            email_notifications=True,
            patient_email=f"{blume_patient_id}@patients.example",
            locale="en-CA",
            study=StudySummary(
                study_date=date(2026, 11, 20), modalities=["CT"], description="CT CHEST W CONTRAST"
            ),
        )
        correlation_id = f"corr-{uuid.uuid4().hex[:8]}"
        self.feed("share.blume.published", published, tenant=tenant, correlation_id=correlation_id)
        if revoked:
            self.revoke(published.share_id, tenant=tenant)
        [entry] = [row for row in self.rows(ProjectedEntry) if row.entry_id == published.entry_id]
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
    freshness = SettableFreshness()
    gateway = Gateway.build(
        settings,
        db,
        OutboxRelay(db, transport),
        freshness,
        config=gateway_settings,
        http=http,
        clock=clock,
    )
    harness = Harness(db, gateway, transport, clock, idp, portal_idp, loop, freshness)
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
