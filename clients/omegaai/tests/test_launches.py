"""``create_launch`` against a stand-in of ``POST /api/v1/launches`` served on 127.0.0.1.

The stand-in keeps the API's contract (issue 9): a bearer launch-client token bound to one
tenant (401 unknown, 403 another tenant's), the body validated with the shared contract
model (422 listing field names in FastAPI's shape), ``201 {launch_url, expires_at}``. A test
can script one answer instead, to see what the client does with any status or body.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from blume_contracts.artefacts import EXAMPLES_DIR
from blume_contracts.events import Sender, Study
from blume_contracts.launches import LaunchRequest
from blume_share_client import (
    InvalidRequestError,
    LaunchClient,
    LaunchError,
    LaunchForbiddenError,
    LaunchRejectedError,
    LaunchUnauthorizedError,
)
from pydantic import ValidationError

EXAMPLE = json.loads((EXAMPLES_DIR / "study.send.requested.json").read_text())["data"]
TOKEN = "lc_" + secrets.token_urlsafe(32)
OTHER_TENANTS_TOKEN = "lc_" + secrets.token_urlsafe(32)
TOKENS = {TOKEN: "demo-hospital", OTHER_TENANTS_TOKEN: "north-clinic"}
PUBLIC = "https://share.example-hospital.ca"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class LaunchApiStandIn:
    """The gateway's launch API as the issue specifies it, or a scripted answer."""

    base_url: str = ""
    received: list[Received] = field(default_factory=list)
    scripted: tuple[int, bytes] | None = None
    expires_at: datetime = field(
        default_factory=lambda: (datetime.now(UTC) + timedelta(minutes=5)).replace(microsecond=0)
    )

    def answer(self, request: Received) -> tuple[int, bytes]:
        if self.scripted is not None:
            return self.scripted
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        tenant = TOKENS.get(token) if scheme == "Bearer" else None
        if tenant is None:
            return 401, json.dumps({"detail": "unknown launch-client token"}).encode()
        try:
            launch = LaunchRequest.model_validate(request.body)
        except ValidationError as error:
            listed = [
                {"loc": ["body", *detail["loc"]], "msg": detail["msg"], "type": detail["type"]}
                for detail in error.errors(include_input=False, include_url=False)
            ]
            return 422, json.dumps({"detail": listed}).encode()
        if launch.tenant_id != tenant:
            forbidden = [{"loc": ["body", "tenant_id"], "msg": "another tenant", "type": "tenant"}]
            return 403, json.dumps({"detail": forbidden}).encode()
        created = {
            "launch_url": f"{PUBLIC}/share/{secrets.token_urlsafe(22)}",
            "expires_at": self.expires_at.isoformat(),
        }
        return 201, json.dumps(created).encode()


@pytest.fixture
def launch_api() -> Iterator[LaunchApiStandIn]:
    stand_in = LaunchApiStandIn()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            received = Received(
                "POST",
                self.path,
                {key.lower(): value for key, value in self.headers.items()},
                json.loads(raw) if raw else None,
            )
            stand_in.received.append(received)
            status, body = stand_in.answer(received)
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stand_in.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield stand_in
    finally:
        server.shutdown()
        server.server_close()


def launch(client: LaunchClient, **changes: Any) -> Any:
    arguments: dict[str, Any] = {
        "tenant_id": "demo-hospital",
        "sender": EXAMPLE["sender"],
        "study": EXAMPLE["study"],
        "locale": "fr-CA",
        **changes,
    }
    return client.create_launch(**arguments)


def test_a_launch_is_created_with_the_token_and_the_body_of_the_contract(
    launch_api: LaunchApiStandIn,
) -> None:
    """POST /api/v1/launches, Bearer token, JSON body of exactly tenant_id, sender, study and
    locale (no patient_account unless given); the answer's URL and expiry come back."""
    with LaunchClient(launch_api.base_url + "/", TOKEN) as client:
        created = launch(client)
    [request] = launch_api.received
    assert (request.method, request.path) == ("POST", "/api/v1/launches")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert set(request.body) == {"tenant_id", "sender", "study", "locale"}
    assert request.body["sender"] == EXAMPLE["sender"]
    assert Study.model_validate(request.body["study"]) == Study.model_validate(EXAMPLE["study"])
    assert request.body["locale"] == "fr-CA"
    assert created.launch_url.startswith(f"{PUBLIC}/share/")
    assert created.expires_at == launch_api.expires_at


def test_a_patient_account_and_models_are_sent_as_given(launch_api: LaunchApiStandIn) -> None:
    """Contract models are accepted for sender and study; patient_account goes in the body."""
    with LaunchClient(launch_api.base_url, TOKEN) as client:
        launch(
            client,
            sender=Sender.model_validate(EXAMPLE["sender"]),
            study=Study.model_validate(EXAMPLE["study"]),
            patient_account={"blume_patient_id": "bp-0001"},
            locale="en-CA",
        )
    [request] = launch_api.received
    assert request.body["patient_account"] == {"blume_patient_id": "bp-0001"}
    assert request.body["locale"] == "en-CA"


def test_an_unknown_token_is_a_typed_401(launch_api: LaunchApiStandIn) -> None:
    """401 raises LaunchUnauthorizedError, naming no field."""
    with (
        LaunchClient(launch_api.base_url, "lc_revoked") as client,
        pytest.raises(LaunchUnauthorizedError) as raised,
    ):
        launch(client)
    assert (raised.value.status, raised.value.fields) == (401, ())


def test_another_tenants_token_is_a_typed_403_naming_the_field(
    launch_api: LaunchApiStandIn,
) -> None:
    """403 raises LaunchForbiddenError carrying the field the server listed (tenant_id)."""
    with (
        LaunchClient(launch_api.base_url, OTHER_TENANTS_TOKEN) as client,
        pytest.raises(LaunchForbiddenError) as raised,
    ):
        launch(client)
    assert (raised.value.status, raised.value.fields) == (403, ("tenant_id",))


def test_a_422_carries_the_listed_field_names_and_no_value(launch_api: LaunchApiStandIn) -> None:
    """The server's listed fields come back (``body`` dropped, deduplicated); nothing else the
    server said, even values a careless server echoed, reaches the error's text."""
    listed = [
        {"loc": ["body", "sender", "email"], "msg": "bad", "input": "PHI-EMAIL@x"},
        {"loc": ["body", "study", "patient", "birth_date"], "msg": "PHI-1980-01-02"},
        {"loc": ["body", "sender", "email"], "msg": "twice"},
        {"loc": ["body", "PHI DOE^JANE"], "msg": "a value in place of a name"},
        {"loc": "not a list"},
        "not an object",
    ]
    launch_api.scripted = (422, json.dumps({"detail": listed}).encode())
    with (
        LaunchClient(launch_api.base_url, TOKEN) as client,
        pytest.raises(LaunchRejectedError) as raised,
    ):
        launch(client)
    assert raised.value.fields == ("sender.email", "study.patient.birth_date", "?")
    assert "PHI" not in str(raised.value)


def test_the_body_is_validated_before_anything_is_sent(launch_api: LaunchApiStandIn) -> None:
    """A body the contract refuses raises InvalidRequestError naming the fields; no request."""
    study = json.loads(json.dumps(EXAMPLE["study"]))
    study["patient"]["mrn"] = "MRN 0001 PHI"
    with (
        LaunchClient(launch_api.base_url, TOKEN) as client,
        pytest.raises(InvalidRequestError) as raised,
    ):
        launch(
            client,
            sender={**EXAMPLE["sender"], "email": "not-an-address"},
            study=study,
            locale="de-DE",
        )
    assert set(raised.value.fields) == {"sender.email", "study.patient.mrn", "locale"}
    assert "PHI" not in str(raised.value)
    assert launch_api.received == []


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, b"<html>proxy says no</html>"),
        (429, b'{"detail": "slow down"}'),
        (503, b""),
        (201, b'{"expires_at": "2026-12-01T10:00:00Z"}'),
        (201, b'{"launch_url": "javascript:alert(1)", "expires_at": "2026-12-01T10:00:00Z"}'),
        (201, b'{"launch_url": "https://x.example/share/a", "expires_at": "2026-12-01T10:00"}'),
        (200, b"not json"),
    ],
)
def test_any_other_answer_is_a_launch_error(
    launch_api: LaunchApiStandIn, status: int, body: bytes
) -> None:
    """Whatever the status or body, the client raises LaunchError with the status (or its
    typed subclass), never returns something that is not a launch."""
    launch_api.scripted = (status, body)
    with LaunchClient(launch_api.base_url, TOKEN) as client, pytest.raises(LaunchError) as raised:
        launch(client)
    assert raised.value.status == status
    assert raised.value.fields == ()


def test_an_unreachable_server_is_a_launch_error() -> None:
    """No server at the address: LaunchError without a status, not an httpx exception."""
    with (
        LaunchClient("http://127.0.0.1:9", TOKEN, timeout=2) as client,
        pytest.raises(LaunchError) as raised,
    ):
        launch(client)
    assert raised.value.status is None
