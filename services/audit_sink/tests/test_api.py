"""The compliance API: bearer tokens, read-only answers, and every use audited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blume_audit_sink.api import create_app, hash_token, parse_token_hashes
from blume_audit_sink.append import append_entries
from blume_audit_sink.models import AuditRecord
from blume_audit_sink.settings import AuditSettings
from blume_contracts.audit_entry import prepare
from blume_runtime.db import Database
from blume_runtime.settings import Settings
from blume_share.schema import upgrade
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from pydantic import SecretStr
from sqlmodel import col, select

TENANT = "demo-hospital"
TOKEN = "s3cret-token-for-the-compliance-tool"


@pytest.fixture
def api(life: Any, state_dir: Path) -> Iterator[TestClient]:
    """The API over a migrated SQLite store holding two shares, with one configured token."""
    state_dir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{state_dir / 'api.db'}"
    upgrade(url)
    audit = AuditSettings(audit_api_tokens=SecretStr(f"compliance-tool:{hash_token(TOKEN)}"))
    app = create_app(Settings(state_dir=state_dir), audit, url)
    events = [*life(), *life(mrn="MRN-0002", recipient=("Dr. Dan Roe", "dan@x.example"))]

    async def fill() -> None:
        db: Database = app.state.db
        for event in events:
            async with db.transaction() as session:
                await append_entries(session, [prepare(event)])

    with TestClient(app) as client:
        client.portal.call(fill)  # type: ignore[union-attr]
        yield client


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def usage_records(client: TestClient) -> list[AuditRecord]:
    async def read() -> list[AuditRecord]:
        db: Database = client.app.state.db  # type: ignore[attr-defined]
        async with db.transaction() as session:
            statement = (
                select(AuditRecord)
                .where(col(AuditRecord.event_type) == "audit.log.used")
                .order_by(col(AuditRecord.seq))
            )
            return list((await session.exec(statement)).all())

    return client.portal.call(read)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong-token"), {"Authorization": "Basic Zm9vOmJhcg=="}, bearer("")],
    ids=["missing", "wrong", "not-bearer", "empty"],
)
def test_a_missing_or_wrong_token_is_refused_and_nothing_is_read(
    api: TestClient, headers: dict[str, str]
) -> None:
    """401 with WWW-Authenticate: Bearer, no data, and no usage record."""
    response = api.get("/v1/records", params={"tenant": TENANT}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "records" not in response.json()
    assert usage_records(api) == []


def test_health_needs_no_token(api: TestClient) -> None:
    """The probe endpoint answers without a token and says nothing about the data."""
    assert api.get("/healthz").json() == {"status": "ok"}


def test_records_filtered_by_patient_one_page_at_a_time(api: TestClient) -> None:
    """Filters apply; next_offset points at the next page until the last one."""
    first = api.get(
        "/v1/records",
        params={"tenant": TENANT, "patient_mrn": "MRN-0002", "limit": 4},
        headers=bearer(),
    ).json()
    assert {r["patient_mrn"] for r in first["records"]} == {"MRN-0002"}
    assert (len(first["records"]), first["next_offset"]) == (4, 4)
    rest = api.get(
        "/v1/records",
        params={"tenant": TENANT, "patient_mrn": "MRN-0002", "limit": 4, "offset": 4},
        headers=bearer(),
    ).json()
    assert (len(rest["records"]), rest["next_offset"]) == (2, None)


def test_every_use_is_recorded_with_a_fingerprint_never_the_token(api: TestClient) -> None:
    """Each answered request appends an audit.log.used record (DICOM 110101) to the chain."""
    api.get(
        "/v1/records",
        params={"tenant": TENANT, "recipient_email": "DAN@x.example"},
        headers={**bearer(), "User-Agent": "compliance-suite/2"},
    )
    api.get(
        "/v1/disclosures", params={"tenant": TENANT, "patient_mrn": "MRN-0001"}, headers=bearer()
    )
    used = usage_records(api)
    assert len(used) == 2
    first = json.loads(used[0].payload)
    assert first["api_client"] == "compliance-tool"
    assert first["query"] == {"recipient_email": "DAN@x.example", "limit": 100, "offset": 0}
    assert first["returned"] == 6
    assert first["token_fingerprint"].startswith("sha256:")
    assert used[0].event_code == "http://dicom.nema.org/resources/ontology/DCM|110101"
    assert json.loads(used[0].agents or "[]")[0]["user_agent"] == "compliance-suite/2"
    assert all(TOKEN not in record.payload for record in used)
    verified = api.get("/v1/verify", params={"tenant": TENANT}, headers=bearer()).json()
    assert verified["ok"] is True


def test_the_fhir_endpoint_returns_a_valid_bundle(api: TestClient) -> None:
    """application/fhir+json, parsed and validated as an R4 Bundle of AuditEvents."""
    response = api.get(
        "/v1/fhir/AuditEvent", params={"tenant": TENANT, "limit": 5}, headers=bearer()
    )
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate_json(response.content)
    assert len(bundle.entry or []) == 5


def test_the_api_only_reads(api: TestClient) -> None:
    """No route accepts a write."""
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = api.request(method, "/v1/records", params={"tenant": TENANT}, headers=bearer())
        assert response.status_code == 405


def test_token_entries_must_be_labelled_hashes() -> None:
    """Configuration holds label:sha256 entries; a bare token is refused, not hashed silently."""
    digest = hash_token("t")
    assert parse_token_hashes(f"a:{digest}\n# comment\nb:{digest.upper()}") == {digest: "b"}
    with pytest.raises(ValueError, match="label"):
        parse_token_hashes("just-a-token")
