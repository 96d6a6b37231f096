"""Sender launches: launch clients, one-time launch URLs, the sender's session and sending.

OmegaAI's backend (a *launch client*, bearer token bound to one tenant) posts the study and
the signed-in user; the gateway keeps that body sealed (the product's sealing keys) and
answers with a URL holding an opaque id (192 random bits, kept only as its SHA-256, usable
once, for five minutes). Redeeming it starts the sender's session (a signed cookie naming
the launch). Sending builds ``study.send.requested`` from the launch (study, sender) and
the form (method, recipient, message, expiry): the sender always comes from the launch.

The sealed body is dropped once the share is sent, once the session is over, and at the
latest ``LAUNCH_DATA_HOURS`` after the launch (``sweep``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from blume_contracts.events import (
    PatientAccountRef,
    Recipient,
    ShareRevokeRequested,
    StudySendRequested,
)
from blume_contracts.ids import share_id_for
from blume_contracts.launches import LaunchRequest
from blume_contracts.tokens import token_hash
from blume_runtime.sealing import Sealer
from blume_runtime.tenants import TenantPolicy
from blume_runtime.unit_of_work import UnitsOfWork
from sqlalchemy import or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_access_gateway.models import (
    LaunchClientRecord,
    ProjectedAccount,
    ProjectedShareStatus,
    SenderLaunch,
    SenderShare,
)

LAUNCH_LIFETIME: Final = timedelta(minutes=5)
SENDER_SESSION: Final = timedelta(minutes=30)
"""How long a redeemed launch stays a session (the sender cookie lives as long)."""
LAUNCH_DATA_HOURS: Final = 24
LAUNCH_ID_BYTES: Final = 24
"""192 random bits in the launch URL (the issue asks for at least 128)."""
CLIENT_TOKEN_PREFIX: Final = "lc_"  # noqa: S105 - a prefix, not a credential


class LaunchRefusal(StrEnum):
    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"


def new_client_token() -> str:
    return CLIENT_TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_launch_client(
    session: AsyncSession, tenant_id: str, name: str, now: datetime
) -> tuple[LaunchClientRecord, str]:
    """A launch client for ``tenant_id`` and its token (returned once; only its hash kept)."""
    token = new_client_token()
    record = LaunchClientRecord(
        client_id=f"lcl_{uuid.uuid4().hex[:16]}",
        tenant_id=tenant_id,
        name=name,
        token_hash=token_hash(token),
        created_at=now,
    )
    session.add(record)
    return record, token


async def launch_clients(session: AsyncSession) -> list[LaunchClientRecord]:
    found = await session.exec(
        select(LaunchClientRecord).order_by(col(LaunchClientRecord.created_at))
    )
    return list(found.all())


async def revoke_launch_client(session: AsyncSession, client_id: str, now: datetime) -> bool:
    """Stop the client's token working; False if there is no such client."""
    record = await session.get(LaunchClientRecord, client_id)
    if record is None:
        return False
    record.revoked_at = record.revoked_at or now
    session.add(record)
    return True


@dataclass(frozen=True, slots=True)
class SenderSession:
    """A redeemed launch and, while it is kept, its body."""

    launch: SenderLaunch
    request: LaunchRequest | None


@dataclass(frozen=True, slots=True)
class SendForm:
    """What the sender typed (the sender and the study come from the launch)."""

    method: str
    recipient_name: str
    recipient_email: str
    message: str
    expires_in_hours: str

    @classmethod
    def empty(cls) -> SendForm:
        return cls("external_link", "", "", "", "")

    @classmethod
    def parse(cls, method: str, name: str, email: str, message: str, hours: str) -> SendForm:
        return cls(method.strip(), name.strip(), email.strip(), message.strip(), hours.strip())

    @property
    def hours(self) -> int | None:
        """The expiry asked for; None when none was chosen (the policy's default applies).

        Raises ``ValueError`` for anything but a whole number."""
        return int(self.expires_in_hours) if self.expires_in_hours else None


class BlumeReadiness(StrEnum):
    """Whether the launch's patient can receive a study in Blume (the page says which)."""

    ENROLLED = "enrolled"
    NOT_ENROLLED = "not_enrolled"
    WITHHELD = "withheld"


class SenderLaunches:
    """The launch store and the events sending and revoking produce."""

    def __init__(
        self,
        events: UnitsOfWork,
        sealer: Sealer,
        study_key: bytes,
        policies: dict[str, TenantPolicy],
        clock: Callable[[], datetime],
    ) -> None:
        self._events = events
        self._sealer = sealer
        self._study_key = study_key
        self._policies = policies
        self._clock = clock

    def study_key(self, tenant_id: str, study_instance_uid: str) -> str:
        """A keyed hash naming the study, so the UID is not kept in the clear."""
        message = f"{tenant_id}\n{study_instance_uid}".encode()
        return hmac.new(self._study_key, message, hashlib.sha256).hexdigest()

    # Launch clients ------------------------------------------------------------------------

    async def client_for(self, bearer: str) -> LaunchClientRecord | None:
        """The live launch client whose token this is."""
        async with self._events.db.transaction() as session:
            found = await session.exec(
                select(LaunchClientRecord).where(
                    LaunchClientRecord.token_hash == token_hash(bearer),
                    col(LaunchClientRecord.revoked_at).is_(None),
                )
            )
            return found.first()

    # Launches ------------------------------------------------------------------------------

    async def create(
        self, request: LaunchRequest, client: LaunchClientRecord
    ) -> tuple[str, datetime]:
        """A new launch: the opaque id for its URL and when it stops being redeemable."""
        now = self._clock()
        url_id = secrets.token_urlsafe(LAUNCH_ID_BYTES)
        launch = SenderLaunch(
            launch_id=f"lch_{uuid.uuid4().hex}",
            url_id_hash=token_hash(url_id),
            client_id=client.client_id,
            tenant_id=request.tenant_id,
            sender_user_id=request.sender.user_id,
            locale=request.locale,
            study_key=self.study_key(request.tenant_id, request.study.study_instance_uid),
            sealed_request=self._sealer.seal(request.model_dump_json()),
            created_at=now,
            expires_at=now + LAUNCH_LIFETIME,
            purge_at=now + timedelta(hours=LAUNCH_DATA_HOURS),
        )
        async with self._events.db.transaction() as session:
            session.add(launch)
        return url_id, launch.expires_at

    async def redeem(self, url_id: str) -> SenderLaunch | LaunchRefusal:
        """Use the launch URL, once: the launch, or why not."""
        now = self._clock()
        async with self._events.db.transaction() as session:
            found = await session.exec(
                select(SenderLaunch)
                .where(SenderLaunch.url_id_hash == token_hash(url_id))
                .with_for_update()
            )
            launch = found.first()
            if launch is None:
                return LaunchRefusal.UNKNOWN
            if launch.redeemed_at is not None:
                return LaunchRefusal.USED
            if launch.expires_at <= now or launch.sealed_request is None:
                return LaunchRefusal.EXPIRED
            launch.redeemed_at = now
            session.add(launch)
            return launch

    async def session(self, launch_id: str) -> SenderSession | None:
        """The sender's session, while it lasts (its body is None once the share is sent)."""
        now = self._clock()
        async with self._events.db.transaction() as session:
            launch = await session.get(SenderLaunch, launch_id)
        if launch is None or launch.redeemed_at is None:
            return None
        if launch.redeemed_at + SENDER_SESSION <= now:
            return None
        request = None
        if launch.sealed_request is not None:
            request = LaunchRequest.model_validate_json(self._sealer.unseal(launch.sealed_request))
        return SenderSession(launch, request)

    async def mark_signed_in(self, launch_id: str) -> None:
        async with self._events.db.transaction() as session:
            launch = await session.get(SenderLaunch, launch_id)
            if launch is not None:
                launch.signed_in_at = self._clock()
                session.add(launch)

    async def readiness(self, request: LaunchRequest) -> BlumeReadiness:
        """From the gateway's projection of patient accounts (``patient.account.updated``)."""
        if request.patient_account is None:
            return BlumeReadiness.NOT_ENROLLED
        async with self._events.db.transaction() as session:
            account = await session.get(ProjectedAccount, request.patient_account.blume_patient_id)
        if account is None or not account.active or account.tenant_id != request.tenant_id:
            return BlumeReadiness.NOT_ENROLLED
        if account.withhold_portal:
            return BlumeReadiness.WITHHELD
        return BlumeReadiness.ENROLLED

    def send_request(self, request: LaunchRequest, form: SendForm) -> StudySendRequested:
        """The event's body, validated by the contract the dispatcher validates with
        (raises ``pydantic.ValidationError``)."""
        recipient = None
        patient_account: PatientAccountRef | None = None
        if form.method == "external_link":
            recipient = {"name": form.recipient_name, "email": form.recipient_email}
        else:
            patient_account = request.patient_account
        return StudySendRequested.model_validate(
            {
                "method": form.method,
                "tenant_id": request.tenant_id,
                "study": request.study,
                "sender": request.sender,
                "recipient": recipient,
                "patient_account": patient_account,
                "message": form.message or None,
                "expires_in_hours": form.hours if form.method == "external_link" else None,
                "locale": request.locale,
            }
        )

    async def send(self, sender: SenderSession, send: StudySendRequested) -> str:
        """Emit ``study.send.requested``, remember the share as the sender's, drop the
        launch's sealed body; the share's id (derived from the event, as the dispatcher does)."""
        launch = sender.launch
        async with self._events.unit_of_work() as work:
            event = work.emit(
                "study.send.requested",
                send,
                tenantid=send.tenant_id,
                correlationid=f"send-{uuid.uuid4()}",
            )
            share_id = share_id_for(event)
            label = send.recipient.name if isinstance(send.recipient, Recipient) else ""
            if send.patient_account is not None:
                label = send.patient_account.blume_patient_id
            work.session.add(
                SenderShare(
                    share_id=share_id,
                    method=send.method,
                    recipient_label=label,
                    created_at=self._clock(),
                    # The launch it came from: whose share it is.
                    launch_id=launch.launch_id,
                    tenant_id=launch.tenant_id,
                    sender_user_id=launch.sender_user_id,
                    study_key=launch.study_key,
                )
            )
            work.session.add(ProjectedShareStatus(share_id=share_id, tenant_id=launch.tenant_id))
            await work.session.exec(
                update(SenderLaunch)
                .where(col(SenderLaunch.launch_id) == launch.launch_id)
                .values(sealed_request=None)
            )
        return share_id

    async def revoke(self, tenant_id: str, share_id: str, requested_by: str) -> None:
        async with self._events.unit_of_work() as work:
            work.emit(
                "share.revoke.requested",
                ShareRevokeRequested(share_id=share_id, requested_by=requested_by),
                tenantid=tenant_id,
                correlationid=f"revoke-{uuid.uuid4()}",
            )

    # Reading shares ------------------------------------------------------------------------

    async def senders_share(self, launch: SenderLaunch, share_id: str) -> SenderShare | None:
        """The share if this launch's sender sent it (of any of their launches)."""
        async with self._events.db.transaction() as session:
            share = await session.get(SenderShare, share_id)
        if share is None or share.sender_user_id != launch.sender_user_id:
            return None
        return share if share.tenant_id == launch.tenant_id else None

    async def status(self, share_id: str) -> ProjectedShareStatus | None:
        async with self._events.db.transaction() as session:
            return await session.get(ProjectedShareStatus, share_id)

    async def earlier_shares(
        self, launch: SenderLaunch
    ) -> Sequence[tuple[SenderShare, ProjectedShareStatus | None]]:
        """This sender's shares of this study, newest first (never other senders')."""
        async with self._events.db.transaction() as session:
            found = await session.exec(
                select(SenderShare, ProjectedShareStatus)
                .join(
                    ProjectedShareStatus,
                    col(ProjectedShareStatus.share_id) == col(SenderShare.share_id),
                    isouter=True,
                )
                .where(
                    SenderShare.tenant_id == launch.tenant_id,
                    SenderShare.sender_user_id == launch.sender_user_id,
                    SenderShare.study_key == launch.study_key,
                )
                .order_by(col(SenderShare.created_at).desc())
            )
            return list(found.all())

    async def sweep(self) -> int:
        """Drop the sealed bodies whose session is over or whose launch is past its 24 hours;
        how many were dropped."""
        now = self._clock()
        async with self._events.db.transaction() as session:
            result = await session.exec(
                update(SenderLaunch)
                .where(col(SenderLaunch.sealed_request).is_not(None))
                .where(
                    or_(
                        col(SenderLaunch.purge_at) <= now,
                        col(SenderLaunch.redeemed_at) <= now - SENDER_SESSION,
                        # Never redeemed and past its five minutes: nobody can open it now.
                        (col(SenderLaunch.redeemed_at).is_(None))
                        & (col(SenderLaunch.expires_at) <= now),
                    )
                )
                .values(sealed_request=None)
            )
            return int(result.rowcount or 0)
