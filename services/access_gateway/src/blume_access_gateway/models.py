"""The gateway's own tables: its projections of other services' events, sign-in code
challenges and the uses of each link.

The gateway reads no other service's table. What it needs of links (link_issuer's),
revocations (share_dispatcher's), patient accounts and record entries (blume_publisher's)
arrives as events (``blume_access_gateway.projections``) into the ``*_projected`` tables.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Final

from blume_runtime.db import timestamp_column
from sqlalchemy import JSON
from sqlmodel import Field, SQLModel


class OtpChallenge(SQLModel, table=True):
    """One emailed sign-in code. Only its keyed hash is kept; only the newest one counts."""

    __tablename__ = "access_gateway_otp_challenges"

    challenge_id: str = Field(primary_key=True, max_length=36)
    link_id: str = Field(max_length=36, index=True)
    code_hash: str = Field(max_length=64)
    """HMAC-SHA256 (hex) of challenge id and code, keyed with a key derived from the gateway
    secret: a six-digit code has too little entropy for a plain hash."""
    created_at: datetime = timestamp_column()
    expires_at: datetime = timestamp_column()
    attempts: int = 0
    """Wrong codes entered so far."""
    locked_at: datetime | None = timestamp_column(nullable=True)
    superseded_at: datetime | None = timestamp_column(nullable=True)
    """Set when a newer code was asked for."""
    consumed_at: datetime | None = timestamp_column(nullable=True)


class LinkGrant(SQLModel, table=True):
    """One granted use of a link: what the policy's maximum number of uses counts."""

    __tablename__ = "access_gateway_link_grants"

    link_id: str = Field(primary_key=True, max_length=36)
    use_number: int = Field(primary_key=True)
    auth_method: str = Field(max_length=16)
    granted_at: datetime = timestamp_column()


class ProjectedLink(SQLModel, table=True):
    """A link as ``share.link.issued`` described it: the page's content and the policy frozen
    at issue time. Its revocation is a ``ProjectedRevocation`` of its share."""

    __tablename__ = "access_gateway_links"

    link_id: str = Field(primary_key=True, max_length=36)
    share_id: str = Field(max_length=36, index=True)
    tenant_id: str = Field(max_length=64)
    token_hash: str = Field(unique=True, max_length=64)
    correlation_id: str = Field(max_length=256)
    recipient_email: str = Field(max_length=254)
    recipient_name: str = Field(max_length=200)
    sender_name: str = Field(max_length=200)
    sender_email: str | None = Field(default=None, max_length=254)
    """Whom ``share.link.locked`` tells; None on links projected before migration 0010."""
    message: str | None = Field(default=None, max_length=2000)
    """The sender's message (PHI): shown only once access is granted, never logged."""
    organisation: str = Field(max_length=200)
    locale: str = Field(max_length=8)
    recipient_auth: str = Field(max_length=16)
    max_uses: int | None = None
    expires_at: datetime = timestamp_column()
    traceparent: str | None = Field(default=None, max_length=55)
    """The share's trace (``share.link.issued``'s), which the gateway's events join."""
    study_instance_uid: str | None = Field(default=None, max_length=64)
    """The one study the image proxy lets this link reach; None on links projected before
    migration 0013 (their viewer says the study is not available)."""


class ProjectedRevocation(SQLModel, table=True):
    """A revoked share (``share.revoked``): its link and its record entries stop working."""

    __tablename__ = "access_gateway_revocations"

    share_id: str = Field(primary_key=True, max_length=36)
    revoked_at: datetime = timestamp_column()


class ProjectedAccount(SQLModel, table=True):
    """A patient account as its newest ``patient.account.updated`` said."""

    __tablename__ = "access_gateway_accounts"

    blume_patient_id: str = Field(primary_key=True, max_length=64)
    tenant_id: str = Field(max_length=64)
    locale: str = Field(max_length=8)
    active: bool
    withhold_portal: bool
    updated_at: datetime = timestamp_column()


class ProjectedEntry(SQLModel, table=True):
    """A record entry as ``share.blume.published`` announced it; ``share_id`` is the share
    that first published it (whose revocation hides it, as in the record store)."""

    __tablename__ = "access_gateway_entries"

    entry_id: str = Field(primary_key=True, max_length=36)
    blume_patient_id: str = Field(max_length=64, index=True)
    tenant_id: str = Field(max_length=64)
    share_id: str = Field(max_length=36)
    correlation_id: str = Field(max_length=256)
    study_date: date | None = None
    modalities: list[str] = Field(default_factory=list, sa_type=JSON)
    description: str | None = Field(default=None, max_length=256)
    traceparent: str | None = Field(default=None, max_length=55)
    study_instance_uid: str | None = Field(default=None, max_length=64)
    """The one study the image proxy lets this entry reach (None before migration 0013)."""


class LaunchClientRecord(SQLModel, table=True):
    """An upstream backend (OmegaAI) allowed to open sender launches for one tenant. Only the
    SHA-256 of its bearer token is kept: the token is printed once, at creation."""

    __tablename__ = "access_gateway_launch_clients"

    client_id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(max_length=64, index=True)
    name: str = Field(max_length=200)
    token_hash: str = Field(unique=True, max_length=64)
    created_at: datetime = timestamp_column()
    revoked_at: datetime | None = timestamp_column(nullable=True)


class SenderLaunch(SQLModel, table=True):
    """One launch of the sharing page, and the sender session it became once redeemed.

    ``sealed_request`` (the launch body: study, patient, sender) is sealed with the product's
    sealing keys and dropped (set to None) once the share is sent, the session is over or at
    most ``LAUNCH_DATA_HOURS`` after creation (``SenderLaunches.sweep``).
    """

    __tablename__ = "access_gateway_launches"

    launch_id: str = Field(primary_key=True, max_length=36)
    """Internal id (``lch_<hex>``), carried in the signed sender cookie; never in a URL."""
    url_id_hash: str = Field(unique=True, max_length=64)
    """SHA-256 of the opaque id in ``launch_url``: the id itself is never stored."""
    client_id: str = Field(max_length=36)
    tenant_id: str = Field(max_length=64)
    sender_user_id: str = Field(max_length=128)
    locale: str = Field(max_length=8)
    """The page's language, kept after the sealed body is dropped."""
    study_key: str = Field(max_length=64, index=True)
    """A keyed hash of the study instance UID: finds this sender's earlier shares of the
    study without keeping the UID in the clear."""
    sealed_request: str | None = None
    created_at: datetime = timestamp_column()
    expires_at: datetime = timestamp_column()
    """Until when the URL may be redeemed (five minutes)."""
    redeemed_at: datetime | None = timestamp_column(nullable=True)
    signed_in_at: datetime | None = timestamp_column(nullable=True)
    """When the sender's staff sign-in matched (``sender_auth: sso``); unused for ``launch``."""
    purge_at: datetime = timestamp_column()
    """When the sealed study data goes at the latest."""


class SenderShare(SQLModel, table=True):
    """A share sent from the sharing page: whose it is, so the page lists only the sender's
    own shares of a study (minimum necessary)."""

    __tablename__ = "access_gateway_sender_shares"

    share_id: str = Field(primary_key=True, max_length=36)
    launch_id: str = Field(max_length=36, index=True)
    tenant_id: str = Field(max_length=64)
    sender_user_id: str = Field(max_length=128, index=True)
    study_key: str = Field(max_length=64, index=True)
    method: str = Field(max_length=16)
    recipient_label: str = Field(max_length=254)
    """Whom it went to as the sender typed it (recipient name, or the Blume patient id)."""
    created_at: datetime = timestamp_column()


class ProjectedShareStatus(SQLModel, table=True):
    """A share's progress as the events about it told the gateway: the sender's status view
    and ``GET /api/v1/shares/{id}`` read it."""

    __tablename__ = "access_gateway_share_status"

    share_id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(max_length=64)
    method: str | None = Field(default=None, max_length=16)
    state: str = Field(default="requested", max_length=16)
    reason: str | None = Field(default=None, max_length=64)
    reason_text: str | None = Field(default=None, max_length=500)
    accepted_at: datetime | None = timestamp_column(nullable=True)
    expires_at: datetime | None = timestamp_column(nullable=True)
    link_issued_at: datetime | None = timestamp_column(nullable=True)
    email_sent_at: datetime | None = timestamp_column(nullable=True)
    completed_at: datetime | None = timestamp_column(nullable=True)
    revoked_at: datetime | None = timestamp_column(nullable=True)
    opened_count: int = 0
    first_opened_at: datetime | None = timestamp_column(nullable=True)
    last_opened_at: datetime | None = timestamp_column(nullable=True)
    accessed_count: int = 0
    last_accessed_at: datetime | None = timestamp_column(nullable=True)


class BrowserSession(SQLModel, table=True):
    """A signed-in browser, server-side: a recipient's access to one link after a grant, a
    patient's portal sign-in (and any later kind, such as a sender's). The cookie carries
    only a random id, kept here hashed; sign-out ends the row, so a copied cookie stops
    working, and the row's ``expires_at`` is absolute: nothing slides it."""

    __tablename__ = "access_gateway_sessions"

    session_hash: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=16)
    subject: str = Field(max_length=64, description="The link id, or the Blume patient id.")
    tenant_id: str | None = Field(default=None, max_length=64)
    use_number: int | None = None
    auth_method: str | None = Field(default=None, max_length=16)
    started_at: datetime = timestamp_column()
    expires_at: datetime = timestamp_column(index=True)
    ended_at: datetime | None = timestamp_column(nullable=True)


class SeriesRead(SQLModel, table=True):
    """A series some viewing session opened: the BALP Read it was recorded as, once per
    session and series whichever gateway replica served it (the key settles the race)."""

    __tablename__ = "access_gateway_series_reads"

    session_hash: str = Field(primary_key=True, max_length=64)
    handle: str = Field(primary_key=True, max_length=65)
    series_number: int = Field(primary_key=True)
    read_at: datetime = timestamp_column(index=True)


TABLES: Final = (
    OtpChallenge,
    LinkGrant,
    ProjectedLink,
    ProjectedRevocation,
    ProjectedAccount,
    ProjectedEntry,
    LaunchClientRecord,
    SenderLaunch,
    SenderShare,
    ProjectedShareStatus,
    BrowserSession,
    SeriesRead,
)
"""The tables of this service, all in its own schema (named ``NAME``); the migrations
create them, and ``blume-share``'s schema check compares them with the database."""
