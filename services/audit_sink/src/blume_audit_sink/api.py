"""The read-only compliance API: query, disclosures, FHIR export and verify, over HTTP.

Every request needs ``Authorization: Bearer <token>``. Tokens are configured as SHA-256
hashes (``BLUME_AUDIT_API_TOKENS`` / ``_FILE``: ``label:hex`` entries), so the server holds
nothing that would let a reader of its configuration call it; the hash of the presented
token is compared with every configured hash in constant time. Tokens are never logged.

Every answered request is itself audited: an ``audit.log.used`` record (DICOM 110101
"Audit Log Used") is appended to the tenant's chain in the transaction that read the data,
so data never leaves without its record. A refused request is logged, not recorded: an
unauthenticated caller must not be able to grow the immutable store.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated, Any, Final

import structlog
from blume_contracts import audit_catalog as catalog
from blume_contracts.audit_entry import prepare
from blume_contracts.envelope import RawEvent, now
from blume_contracts.sensitivity import fingerprint
from blume_runtime.db import Database
from blume_runtime.settings import Settings
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel.ext.asyncio.session import AsyncSession

from blume_audit_sink.append import append_entries
from blume_audit_sink.disclosures import DisclosureRequest, accounting
from blume_audit_sink.export import fhir_bundle, fhir_json
from blume_audit_sink.models import SCHEMA
from blume_audit_sink.search import RecordFilter, find, record_as_json
from blume_audit_sink.settings import AuditSettings
from blume_audit_sink.verify import verify_store

log = structlog.get_logger("audit_api")

API_SOURCE: Final = "/blume-share/audit-api"
MAX_PAGE: Final = 1000
FHIR_JSON: Final = "application/fhir+json"


class TokenConfigError(ValueError):
    pass


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh bearer token (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def parse_token_hashes(text: str) -> dict[str, str]:
    """``label:sha256hex`` entries, comma- or line-separated -> {hash: label}."""
    hashes: dict[str, str] = {}
    for raw in text.replace("\n", ",").split(","):
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        label, _, digest = item.rpartition(":")
        digest = digest.lower()
        if not label or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise TokenConfigError("each API token entry must be label:<64 hex digits of SHA-256>")
        hashes[digest] = label
    return hashes


def token_hashes(audit: AuditSettings) -> dict[str, str]:
    text = ""
    if audit.audit_api_tokens is not None:
        text += audit.audit_api_tokens.get_secret_value() + ","
    if audit.audit_api_tokens_file is not None:
        text += audit.audit_api_tokens_file.read_text()
    return parse_token_hashes(text)


@dataclass(frozen=True, slots=True)
class ApiClient:
    label: str
    token_fingerprint: str


def _match(presented: str, hashes: dict[str, str]) -> str | None:
    """The label of the matching hash; every configured hash is compared, none skipped."""
    digest = hash_token(presented)
    label: str | None = None
    for known, known_label in hashes.items():
        if hmac.compare_digest(digest, known):
            label = known_label
    return label


_bearer = HTTPBearer(auto_error=False)


async def authenticated_client(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiClient:
    """The caller named by its bearer token; 401 for a missing or unknown token."""
    hashes: dict[str, str] = request.app.state.token_hashes
    label = _match(credentials.credentials, hashes) if credentials is not None else None
    if credentials is None or label is None:
        log.warning(
            "audit API request refused",
            path=request.url.path,
            reason="missing token" if credentials is None else "unknown token",
        )
        raise HTTPException(
            status_code=401,
            detail="a valid bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return ApiClient(label, fingerprint(credentials.credentials))


Caller = Annotated[ApiClient, Depends(authenticated_client)]


@asynccontextmanager
async def audited_read(
    request: Request, caller: ApiClient, tenant: str, filters: dict[str, Any]
) -> AsyncIterator[tuple[AsyncSession, dict[str, Any]]]:
    """A transaction for the read that, on success, also records who read what."""
    db: Database = request.app.state.db
    outcome: dict[str, Any] = {}
    async with db.transaction() as session:
        yield session, outcome
        event = RawEvent(
            id=str(uuid.uuid4()),
            source=API_SOURCE,
            type=catalog.AUDIT_LOG_USED_TYPE,
            time=now(),
            tenantid=tenant,
            correlationid=request.headers.get("x-request-id", "") or str(uuid.uuid4()),
            data={
                "api_client": caller.label,
                "token_fingerprint": caller.token_fingerprint,
                "endpoint": request.url.path,
                "query": {k: v for k, v in filters.items() if v is not None},
                "returned": outcome.get("returned"),
                "client_ip": request.client.host if request.client else None,
                "user_agent": request.headers.get("user-agent"),
            },
        )
        await append_entries(session, [prepare(event)])
    log.info("audit API used", api_client=caller.label, path=request.url.path)


@dataclass(frozen=True, slots=True)
class Page:
    """Which page of the matching records: ``limit`` of them, after the first ``offset``."""

    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100
    offset: Annotated[int, Query(ge=0)] = 0


_FILTER_NAMES: Final = {"tenant": "tenant_id", "sender": "sender_user_id", "type": "event_type"}
"""The query parameters that ``RecordFilter`` names otherwise; the rest are its own names."""


@dataclass(frozen=True, slots=True)
class FhirRecordQuery:
    """The FHIR export's filters, as query parameters: one tenant's records, of a patient
    or a share, in a period."""

    tenant: str
    patient_mrn: str | None = None
    share_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def record_filter(self) -> RecordFilter:
        given = asdict(self).items()
        return RecordFilter(**{_FILTER_NAMES.get(name, name): value for name, value in given})

    def asked(self, page: Page) -> dict[str, Any]:
        """The query as the audit record of the read keeps it (the tenant is the chain)."""
        filters = {name: value for name, value in asdict(self).items() if name != "tenant"}
        return {**_jsonable(filters), **asdict(page)}


@dataclass(frozen=True, slots=True)
class RecordQuery(FhirRecordQuery):
    """``/v1/records``' filters: the FHIR export's, and the study, the sender's user id,
    the recipient's address and the event type."""

    study_uid: str | None = None
    sender: str | None = None
    recipient_email: str | None = None
    type: str | None = None


FhirQuery = Annotated[FhirRecordQuery, Depends()]
RecordsQuery = Annotated[RecordQuery, Depends()]
PageQuery = Annotated[Page, Depends()]


def create_app(settings: Settings, audit: AuditSettings, database_url: str) -> FastAPI:
    """The API over the audit schema of the database at ``database_url``; tokens from
    ``audit``. The API is the audit sink's: ``BLUME_AUDIT_SINK_DATABASE_URL``, read only."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = Database(database_url, schema=SCHEMA)
        try:
            yield
        finally:
            await app.state.db.dispose()

    app = FastAPI(
        title="Blume Share audit API",
        description="Read-only access to the audit trail for compliance tools.",
        version="1",
        lifespan=lifespan,
        # No slash redirects: their Location would come from the request's Host header.
        redirect_slashes=False,
    )
    app.state.token_hashes = token_hashes(audit)

    @app.get("/healthz")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/records")
    async def records(
        request: Request, caller: Caller, query: RecordsQuery, page: PageQuery
    ) -> dict[str, Any]:
        """Audit records of one tenant, filtered, oldest first, one page at a time."""
        limit, offset = page.limit, page.offset
        async with audited_read(request, caller, query.tenant, query.asked(page)) as (
            session,
            outcome,
        ):
            # One more than asked tells whether another page exists.
            found = await find(session, query.record_filter(), limit=limit + 1, offset=offset)
            shown = found[:limit]
            outcome["returned"] = len(shown)
        return {
            "records": [record_as_json(record) for record in shown],
            "limit": limit,
            "offset": offset,
            "next_offset": offset + limit if len(found) > limit else None,
        }

    @app.get("/v1/disclosures")
    async def disclosures(
        request: Request, caller: Caller, wanted: Annotated[DisclosureRequest, Depends()]
    ) -> dict[str, Any]:
        """The accounting of disclosures (HIPAA 164.528) for one patient."""
        filters = _jsonable(
            {"patient_mrn": wanted.patient_mrn, "since": wanted.since, "until": wanted.until}
        )
        async with audited_read(request, caller, wanted.tenant, filters) as (session, outcome):
            report = await accounting(session, wanted)
            outcome["returned"] = len(report.disclosures)
        return report.as_json()

    @app.get("/v1/fhir/AuditEvent")
    async def fhir(request: Request, caller: Caller, query: FhirQuery, page: PageQuery) -> Response:
        """A page of records as a FHIR R4 Bundle of AuditEvent resources."""
        async with audited_read(request, caller, query.tenant, query.asked(page)) as (
            session,
            outcome,
        ):
            wanted = query.record_filter()
            shown = await find(session, wanted, limit=page.limit, offset=page.offset)
            outcome["returned"] = len(shown)
        return Response(fhir_json(fhir_bundle(shown)), media_type=FHIR_JSON)

    @app.get("/v1/verify")
    async def verify(request: Request, caller: Caller, tenant: str) -> dict[str, Any]:
        """Whether the tenant's chain verifies against its checkpoints."""
        async with audited_read(request, caller, tenant, {}) as (session, outcome):
            report = await verify_store(session, settings, audit, chain_id=tenant)
            outcome["returned"] = report.checked
        return {
            "ok": report.ok,
            "records": report.checked,
            "checkpoints": report.checkpoints,
            "problems": [
                {"chain_id": p.chain_id, "seq": p.seq, "kind": p.kind.value, "detail": p.detail}
                for p in report.problems
            ],
        }

    return app


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
