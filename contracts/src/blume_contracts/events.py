"""Event data models: one per event type on the ``blume.share`` exchange.

Requests are named ``*.requested``; facts are in the past tense. Every outcome event
carries the ``share_id``; the envelope carries the request's ``correlationid``.

Over 400 lines on purpose: it is the contract, one model per event type, read (and
reviewed) as one page; the JSON Schemas and the AsyncAPI document are generated from it.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Final, Literal, Self, get_args

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from blume_contracts.locales import Locale
from blume_contracts.sensitivity import phi, secret

MAX_MESSAGE_LENGTH = 2000
ShareMethod = Literal["external_link", "blume"]
SHARE_METHODS: Final[tuple[ShareMethod, ...]] = get_args(ShareMethod)


def share_method(stored: str) -> ShareMethod:
    """A share's stored method as the contract's type: ``blume`` is itself, anything else
    travelled by link (the only other way a share goes out)."""
    return "blume" if stored == "blume" else "external_link"


def _email_syntax(value: str) -> str:
    """RFC 5322 addr-spec syntax (no display name, no quoting, no CR/LF); no DNS look-up."""
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise ValueError(str(error)) from None


EmailAddress = Annotated[str, StringConstraints(max_length=254), AfterValidator(_email_syntax)]
# A DICOM UID: dot-separated numeric components, at most 64 characters (PS3.5 9.1).
DicomUid = Annotated[
    str, StringConstraints(max_length=64, pattern=r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
]
# Person names (including DICOM PN with ^ separators): no control characters.
PersonName = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
]
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
]
FreeText = Annotated[str, StringConstraints(max_length=MAX_MESSAGE_LENGTH)]
ShareId = Annotated[str, StringConstraints(pattern=r"^shr_[0-9a-f]{32}$")]
Modalities = Annotated[
    list[Annotated[str, StringConstraints(pattern=r"^[A-Z]{2,4}$")]], Field(max_length=16)
]
"""A study's DICOM modality codes (``CT``, ``MR``, ...)."""
StudyDescription = Annotated[str, StringConstraints(max_length=256)]


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Patient(Contract):
    mrn: Identifier = phi()
    name: PersonName = phi()
    birth_date: date | None = phi(default=None)


class Study(Contract):
    study_instance_uid: DicomUid = phi()
    accession_number: Identifier | None = phi(default=None)
    study_date: date | None = phi(default=None)
    modalities: Modalities = Field(default_factory=list)
    description: StudyDescription | None = phi(default=None)
    patient: Patient


class Sender(Contract):
    user_id: Identifier
    name: PersonName
    email: EmailAddress = phi()


class Recipient(Contract):
    name: PersonName = phi()
    email: EmailAddress = phi()


class PatientAccountRef(Contract):
    blume_patient_id: Identifier


_MISSING_AUDIENCE: Final[dict[ShareMethod, str]] = {
    "external_link": "an external_link share needs a recipient",
    "blume": "a blume share needs a patient_account",
}
"""Why a request cannot be shared by its method: nobody it could reach is named."""


class StudySendRequested(Contract):
    """A user of OmegaAI asked to share a study (the only event upstream publishes)."""

    method: ShareMethod
    tenant_id: Identifier
    study: Study
    sender: Sender
    recipient: Recipient | None = None
    patient_account: PatientAccountRef | None = None
    message: FreeText | None = phi(default=None)
    expires_in_hours: Annotated[int, Field(gt=0)] | None = None
    locale: Locale = "en-CA"

    def link_hours(self, default_hours: int) -> int:
        """How long the link should work: the hours asked for, else the tenant's default."""
        return self.expires_in_hours or default_hours

    @model_validator(mode="after")
    def _audience_matches_method(self) -> Self:
        audience = self.recipient if self.method == "external_link" else self.patient_account
        if audience is None:
            raise ValueError(_MISSING_AUDIENCE[self.method])
        return self


class RejectionReason(StrEnum):
    INVALID_ENVELOPE = "invalid_envelope"
    """A CloudEvent attribute (tenantid, correlationid, time, ...) is missing or unusable."""
    MALFORMED_REQUEST = "malformed_request"
    UNKNOWN_METHOD = "unknown_method"
    UNKNOWN_TENANT = "unknown_tenant"
    TENANT_MISMATCH = "tenant_mismatch"
    INVALID_RECIPIENT_EMAIL = "invalid_recipient_email"
    INVALID_RECIPIENT_NAME = "invalid_recipient_name"
    INVALID_SENDER = "invalid_sender"
    INVALID_STUDY_UID = "invalid_study_uid"
    INVALID_STUDY = "invalid_study"
    INVALID_PATIENT = "invalid_patient"
    UNSUPPORTED_LOCALE = "unsupported_locale"
    INVALID_EXPIRY = "invalid_expiry"
    EXPIRY_EXCEEDS_POLICY = "expiry_exceeds_policy"
    MESSAGE_TOO_LONG = "message_too_long"
    MISSING_RECIPIENT = "missing_recipient"
    MISSING_PATIENT_ACCOUNT = "missing_patient_account"
    PATIENT_NOT_ENROLLED = "patient_not_enrolled"
    PATIENT_MISMATCH = "patient_mismatch"
    CONSENT_DIRECTIVE = "consent_directive"


class ShareAccepted(Contract):
    share_id: ShareId
    method: ShareMethod
    expires_at: AwareDatetime | None = Field(
        default=None, description="When the link stops working (external links only)."
    )


class ShareRejected(Contract):
    share_id: ShareId
    reason: RejectionReason
    message: Annotated[str, StringConstraints(max_length=500)] = Field(
        description="Human-readable; never echoes the rejected value."
    )
    field: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        default=None, description="Dotted path of the offending field."
    )


RecipientAuth = Literal["none", "email_otp", "sso"]
TokenHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ShareLinkRequested(Contract):
    share_id: ShareId
    tenant_id: Identifier
    study_instance_uid: DicomUid = phi()
    recipient: Recipient
    sender: Sender
    organisation: PersonName
    message: FreeText | None = phi(default=None)
    locale: Locale
    expires_at: AwareDatetime
    recipient_auth: RecipientAuth = Field(
        default="none", description="The tenant's policy when the share was accepted."
    )
    max_uses: Annotated[int, Field(gt=0)] | None = Field(
        default=None, description="Grants allowed through the link; unlimited when absent."
    )

    @classmethod
    def for_request(
        cls,
        request: StudySendRequested,
        *,
        share_id: str,
        expires_at: datetime,
        organisation: str,
        recipient_auth: RecipientAuth,
        max_uses: int | None,
    ) -> ShareLinkRequested:
        """The link to mint for an accepted external share: the request's parties, wording
        and locale carried as asked; its share, expiry and the tenant's terms as given."""
        carried = {name: getattr(request, name) for name in _CARRIED_FROM_SEND_REQUEST}
        return cls(
            share_id=share_id,
            study_instance_uid=request.study.study_instance_uid,
            expires_at=expires_at,
            organisation=organisation,
            recipient_auth=recipient_auth,
            max_uses=max_uses,
            **carried,
        )


_CARRIED_FROM_SEND_REQUEST: Final = ("tenant_id", "recipient", "sender", "message", "locale")
"""The fields ``share.link.requested`` repeats from its ``study.send.requested`` unchanged."""


class ShareLinkIssued(Contract):
    share_id: ShareId
    link_id: Annotated[str, StringConstraints(pattern=r"^lnk_[0-9a-f]{32}$")]
    token_fingerprint: str = Field(description="sha256 reference to the token; not the token.")
    sealed_link: str = secret(
        description="The recipient link, encrypted for the notifier (Fernet). Never stored."
    )
    expires_at: AwareDatetime
    recipient: Recipient
    sender: Sender
    organisation: PersonName
    message: FreeText | None = phi(default=None)
    locale: Locale
    # What the access gateway's link projection needs, frozen at issue time. Optional so an
    # event issued before these fields existed still validates (the gateway's migration
    # copied those links from link_issuer's store).
    token_hash: TokenHash | None = secret(
        default=None, description="SHA-256 (hex) of the token: how the gateway finds the link."
    )
    recipient_auth: RecipientAuth = Field(
        default="none", description="The tenant's policy when the share was accepted."
    )
    max_uses: Annotated[int, Field(gt=0)] | None = Field(
        default=None, description="Grants allowed through the link; unlimited when absent."
    )
    study_instance_uid: DicomUid | None = phi(
        default=None,
        description="The shared study: the gateway's image proxy lets the link reach it only.",
    )

    @classmethod
    def for_request(
        cls,
        request: ShareLinkRequested,
        *,
        link_id: str,
        token_fingerprint: str,
        sealed_link: str,
        token_hash: str,
    ) -> ShareLinkIssued:
        """The answer to ``request``: its audience, wording, expiry and policy carried as
        asked, with what issuing made (the link's id, its token's hash and sealed URL)."""
        carried = {name: getattr(request, name) for name in _CARRIED_FROM_LINK_REQUEST}
        return cls(
            link_id=link_id,
            token_fingerprint=token_fingerprint,
            sealed_link=sealed_link,
            token_hash=token_hash,
            **carried,
        )


_CARRIED_FROM_LINK_REQUEST: Final = (
    "share_id",
    "expires_at",
    "recipient",
    "sender",
    "organisation",
    "message",
    "locale",
    "recipient_auth",
    "max_uses",
    "study_instance_uid",
)
"""The fields ``share.link.issued`` repeats from its ``share.link.requested`` unchanged."""


NotificationPurpose = Literal["share", "sign_in_code", "link_locked", "sender_notice"]
NotificationAddressee = Literal["recipient", "patient", "sender"]
MessageId = Annotated[str, StringConstraints(max_length=255)]
ErrorClass = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z_]+$")]


class ShareNotificationSent(Contract):
    share_id: ShareId
    purpose: NotificationPurpose = Field(
        default="share", description="The share email itself, or a sign-in code for it."
    )
    addressee: NotificationAddressee = Field(
        default="recipient",
        description="Whom the email went to: the share's recipient, the patient herself, or "
        "the sender (told what became of the share).",
    )
    channel: Literal["email"] = "email"
    message_id: MessageId = Field(description="RFC 5322 Message-ID of the email, stable per share.")
    recipient_email: EmailAddress = phi()
    accepted_at: AwareDatetime


class ShareNotificationFailed(Contract):
    share_id: ShareId
    purpose: NotificationPurpose = "share"
    reason: Literal["smtp_rejected", "smtp_unavailable", "template_error", "code_expired"]
    detail: Annotated[str, StringConstraints(max_length=500)]


class ShareNotificationDelayed(Contract):
    """An email could not be sent yet: a dependency is down and the notifier keeps trying.

    Emitted once per error class and message, the first time a retry is scheduled; the share
    waits (it has not failed) until ``share.notification.sent`` or ``.failed`` follows.
    """

    share_id: ShareId
    purpose: NotificationPurpose = "share"
    error_class: ErrorClass = Field(description="Why it waits, e.g. smtp_unavailable.")
    first_failed_at: AwareDatetime
    next_attempt_at: AwareDatetime


class ShareCompleted(Contract):
    share_id: ShareId
    method: ShareMethod
    completed_at: AwareDatetime
    notification: Literal["sent", "suppressed_by_preference"] = Field(
        default="sent",
        description="Whether an email went out, or the patient's preference suppressed it.",
    )
    notification_message_id: MessageId | None = None


class ShareFailed(Contract):
    share_id: ShareId
    reason: str
    message: Annotated[str, StringConstraints(max_length=500)]
    failed_at: AwareDatetime


WithholdReason = Literal["consent_directive", "patient_not_enrolled", "patient_mismatch"]


class StudySummary(Contract):
    """What the patient's portal page shows of a record entry."""

    study_date: date | None = phi(default=None)
    modalities: Modalities = Field(default_factory=list)
    description: StudyDescription | None = phi(default=None)


# The summary the portal shows, and which study of which patient it is. (The docstring is
# the schema's description: the artefacts would change with it.)
class BlumeStudy(StudySummary):
    """What the patient record needs of a study: enough for a FHIR ImagingStudy, no more."""

    study_instance_uid: DicomUid = phi()
    patient_mrn: Identifier = phi()


class ShareBlumeRequested(Contract):
    share_id: ShareId
    tenant_id: Identifier
    blume_patient_id: Identifier
    study: BlumeStudy


class ShareBlumePublished(Contract):
    share_id: ShareId
    blume_patient_id: Identifier
    entry_id: Annotated[str, StringConstraints(pattern=r"^ent_[0-9a-f]{32}$")] = Field(
        description="Opaque id of the record entry: random, not derived from the UID or MRN."
    )
    newly_published: bool = Field(description="False when the entry already existed.")
    email_notifications: bool
    patient_email: EmailAddress = phi()
    locale: Locale
    study: StudySummary | None = Field(
        default=None, description="What the patient's portal shows of the entry."
    )
    study_instance_uid: DicomUid | None = phi(
        default=None,
        description="The entry's study: the gateway's image proxy lets the entry reach it only.",
    )


class ShareBlumeWithheld(Contract):
    share_id: ShareId
    reason: WithholdReason
    message: Annotated[str, StringConstraints(max_length=500)]


class ShareNotificationSuppressed(Contract):
    share_id: ShareId
    reason: Literal["patient_preference"] = "patient_preference"


# The recipient-access side (access gateway), revocation and sign-in codes.

ClientIp = Annotated[str, StringConstraints(max_length=45, pattern=r"^[0-9A-Fa-f:.]+$")]
UserAgent = Annotated[str, StringConstraints(max_length=512)]
LinkId = Annotated[str, StringConstraints(pattern=r"^lnk_[0-9a-f]{32}$")]
AuthMethod = Literal["none", "email_otp", "sso"]
DenialReason = Literal[
    "unknown",
    "expired",
    "revoked",
    "wrong_code",
    "locked",
    "code_attempts_exhausted",
    "code_expired",
    "rate_limited",
    "sso_mismatch",
    "sso_failed",
    "max_uses",
    "csrf",
    "not_current",
]


class ClientContext(Contract):
    """Who is at the other end of an HTTP request, for the audit trail."""

    client_ip: ClientIp = phi()
    user_agent: UserAgent | None = phi(default=None)


class ShareRevokeRequested(Contract):
    share_id: ShareId
    requested_by: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    reason: Annotated[str, StringConstraints(max_length=200)] | None = None


class ShareRevoked(Contract):
    share_id: ShareId
    method: ShareMethod
    requested_by: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    reason: Annotated[str, StringConstraints(max_length=200)] | None = None
    revoked_at: AwareDatetime


class ShareLinkOpened(Contract):
    """The link page was viewed (a GET: scanners do this too; nothing is consumed)."""

    share_id: ShareId
    link_id: LinkId
    client: ClientContext


class ShareLinkAccessed(Contract):
    """Access was granted: the recipient is on their way to the viewer."""

    share_id: ShareId
    link_id: LinkId
    auth_method: AuthMethod
    signed_in_as: EmailAddress | None = phi(
        default=None, description="The SSO identity, when SSO was used."
    )
    use_number: Annotated[int, Field(gt=0)]
    client: ClientContext
    message_disclosed: bool = Field(
        default=False,
        description="The grant disclosed the sender's message (shown on the link page only "
        "once access is granted; never in an email).",
    )


class ShareLinkDenied(Contract):
    share_id: ShareId | None = Field(default=None, description="None for an unknown token.")
    link_id: LinkId | None = None
    reason: DenialReason
    token_fingerprint: str | None = Field(
        default=None, description="Of the presented token, to correlate guessing; never it."
    )
    client: ClientContext
    count: Annotated[int, Field(ge=1)] = Field(
        default=1,
        description="Denials this record stands for: more than one for the aggregate of a "
        "client's denials of tokens matching no link, for one reason, in one minute.",
    )
    counted_from: AwareDatetime | None = Field(
        default=None, description="With a count over one: the start of the minute counted."
    )


class ShareOtpRequested(Contract):
    """A one-time sign-in code for an email_otp link, on its way to the invited address."""

    share_id: ShareId
    link_id: LinkId
    challenge_id: Annotated[str, StringConstraints(pattern=r"^otp_[0-9a-f]{32}$")]
    recipient: Recipient
    organisation: PersonName
    locale: Locale
    sealed_code: str = secret(description="The code, encrypted for the notifier. Never stored.")
    expires_at: AwareDatetime


class ShareLinkLocked(Contract):
    """Too many wrong sign-in codes over the link's life: the link is locked for good, and
    the notifier tells the sender (only a new share helps the recipient)."""

    share_id: ShareId
    link_id: LinkId
    reason: Literal["code_attempts_exhausted"] = "code_attempts_exhausted"
    sender_name: PersonName = phi()
    sender_email: EmailAddress = phi(description="Where the notifier tells the sender.")
    recipient: Recipient
    organisation: PersonName
    locale: Locale
    locked_at: AwareDatetime


class ShareBlumeViewed(Contract):
    share_id: ShareId | None = None
    entry_id: Annotated[str, StringConstraints(pattern=r"^ent_[0-9a-f]{32}$")]
    blume_patient_id: Identifier
    client: ClientContext


class ShareTrackingUpdated(Contract):
    """The dispatcher's tally of a link share's opens and grants, as it is now.

    Consumers keep the one with the highest counts: each update is cumulative.
    """

    share_id: ShareId
    opened_count: Annotated[int, Field(ge=0)]
    first_opened_at: AwareDatetime | None = None
    last_opened_at: AwareDatetime | None = None
    accessed_count: Annotated[int, Field(ge=0)]
    last_accessed_at: AwareDatetime | None = None


SenderOccasion = Literal["rejected", "failed", "first_access", "revoked"]


class SenderNotificationRequested(Contract):
    """The dispatcher asks the notifier to tell the sender what became of a share.

    Nothing of the patient or the study: a share reference, the occasion, its reason code
    and, at most, the recipient's masked address. One email per share and occasion.
    """

    share_id: ShareId
    occasion: SenderOccasion
    reason: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="The reason code (rejection, failure or revocation)."
    )
    sender_name: PersonName | None = phi(default=None)
    sender_email: EmailAddress = phi(description="Where the notifier tells the sender.")
    recipient_hint: Annotated[str, StringConstraints(max_length=254)] | None = Field(
        default=None, description="The recipient's masked address (b***@clinic.example)."
    )
    locale: Locale


class ShareBlumeDenied(Contract):
    """A signed-in patient asked for a portal entry they may not see (another patient's, an
    unknown one, revoked, withheld): answered 404, recorded here. A probe flood is
    aggregated like unknown link tokens: one record per client and minute with a count."""

    entry_id: Annotated[str, StringConstraints(pattern=r"^ent_[0-9a-f]{32}$")] | None = Field(
        default=None, description="None when the path named no well-formed entry id."
    )
    blume_patient_id: Identifier
    reason: Literal["not_shown"] = "not_shown"
    client: ClientContext
    count: Annotated[int, Field(ge=1)] = Field(
        default=1, description="Denials this record stands for (the aggregate of one minute)."
    )
    counted_from: AwareDatetime | None = Field(
        default=None, description="With a count over one: the start of the minute counted."
    )


class SessionSignedOut(Contract):
    """Someone signed out of the gateway: a patient of the portal, or a recipient of the
    access a link granted. The session is ended server-side (its cookie, even copied, no
    longer works)."""

    kind: Literal["patient", "recipient"]
    blume_patient_id: Identifier | None = Field(default=None, description="A patient's.")
    share_id: ShareId | None = Field(default=None, description="A recipient's link's share.")
    link_id: LinkId | None = None
    client: ClientContext


class PatientNotificationsUnsubscribed(Contract):
    """The patient switched off Blume email notifications with the one-click unsubscribe
    of a Blume email (RFC 8058). blume_publisher, the account's owner, applies it (the
    patient's own choice, timestamped: a later import does not silently undo it)."""

    blume_patient_id: Identifier
    tenant_id: Identifier
    unsubscribed_at: AwareDatetime
    client: ClientContext


ImagesAudience = Literal["recipient", "patient"]


class ShareImagesAccess(Contract):
    """Someone looked at a shared study's images through the gateway's proxy: a recipient
    through a link (``link_id``, ``use_number``) or a patient through a record entry
    (``entry_id``, ``blume_patient_id``). Never a UID: the share names the study."""

    share_id: ShareId
    audience: ImagesAudience
    link_id: LinkId | None = None
    use_number: Annotated[int, Field(gt=0)] | None = None
    entry_id: Annotated[str, StringConstraints(pattern=r"^ent_[0-9a-f]{32}$")] | None = None
    blume_patient_id: Identifier | None = None
    client: ClientContext


class ShareImagesViewed(ShareImagesAccess):
    """IHE BALP Read: a series of the study was opened (once per series per session)."""

    series_number: Annotated[int, Field(ge=1)] = Field(
        description="The series' position in the viewer's list (1-based), not its UID."
    )
    instances: Annotated[int, Field(ge=0)]


class ShareImagesExported(ShareImagesAccess):
    """IHE BALP Export: the study's DICOM files were downloaded as a ZIP."""

    instances: Annotated[int, Field(ge=0)] = Field(description="Files the ZIP held.")


class ShareImagesUnavailable(ShareImagesAccess):
    """The viewer was opened but the study is not (or no longer) on the tenant's PACS."""

    reason: Literal["not_on_pacs", "pacs_unreachable"]


# ------------------------------------------------------------- operator actions on dead letters

MAX_DEAD_LETTERS_PER_EVENT = 500
"""A replay or purge of more messages is recorded as several events, one per batch."""
OsAccount = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")
]
WireText = Annotated[str, StringConstraints(max_length=1024)]
"""A message id or routing key as it was on the wire (any publisher's, escaped if not text)."""


class DeadLetterSelection(Contract):
    """What the operator asked for: ``--id``, ``--type`` or ``--all`` (with ``--limit``)."""

    by: Literal["id", "type", "all"]
    values: Annotated[list[WireText], Field(max_length=MAX_DEAD_LETTERS_PER_EVENT)] = []
    limit: Annotated[int, Field(ge=1)] | None = None


class DeadLettersHandled(Contract):
    """An operator moved or deleted messages of one service's dead-letter queue."""

    service: Identifier
    requested_by: OsAccount = Field(
        description="The operating-system account that ran the command, as the OS reports it."
    )
    asserted_operator: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        default=None,
        description="BLUME_OPERATOR when set: self-asserted by whoever ran the command, "
        "not verified.",
    )
    host: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    broker_user: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    selection: DeadLetterSelection
    message_ids: Annotated[list[WireText | None], Field(max_length=MAX_DEAD_LETTERS_PER_EVENT)]
    event_types: Annotated[list[WireText], Field(max_length=MAX_DEAD_LETTERS_PER_EVENT)]
    count: Annotated[int, Field(ge=0, le=MAX_DEAD_LETTERS_PER_EVENT)]
    performed_at: AwareDatetime


class DeadLettersReplayed(DeadLettersHandled):
    """Dead letters moved back onto their service's queue, keeping their verified producer."""


class DeadLettersPurged(DeadLettersHandled):
    """Dead letters deleted for good."""


AccountStatus = Literal["active", "inactive"]


class PatientAccountUpdated(Contract):
    """A Blume patient account as it is now (created or changed): what consumers project.

    Consumers keep the newest by ``updated_at``: an older copy arriving late changes nothing.
    """

    blume_patient_id: Identifier
    tenant_id: Identifier
    mrn: Identifier = phi()
    email: EmailAddress = phi()
    locale: Locale
    email_notifications: bool
    status: AccountStatus
    withhold_portal: bool = Field(description="Consent: nothing may enter the portal record.")
    withhold_external_links: bool = Field(
        description="Consent (Ontario's lock box): no study may go to an external recipient."
    )
    updated_at: AwareDatetime
