"""Small runtime pieces: database URLs, sealing and key rotation, log redaction, settings."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import structlog
from blume_runtime.db import database_url
from blume_runtime.logging import REDACTED, configure_logging, redact_processor
from blume_runtime.sealing import Sealer, SealingKeyError
from blume_runtime.settings import Settings
from cryptography.fernet import Fernet
from pydantic import SecretStr


@pytest.mark.parametrize(
    ("given", "use_async", "expected"),
    [
        ("postgresql://u:p@db/blume", True, "postgresql+psycopg://u:p@db/blume"),
        ("postgres://u@db/blume", True, "postgresql+psycopg://u@db/blume"),
        ("postgresql+psycopg://u@db/blume", False, "postgresql+psycopg://u@db/blume"),
        ("sqlite:////tmp/x.db", True, "sqlite+aiosqlite:////tmp/x.db"),
        ("sqlite:////tmp/x.db", False, "sqlite:////tmp/x.db"),
    ],
)
def test_database_urls_pick_the_driver(given: str, use_async: bool, expected: str) -> None:
    """Plain postgresql:// and postgres:// URLs work; the driver is chosen for the caller."""
    assert database_url(given, use_async=use_async) == expected


def test_unsupported_database_is_refused() -> None:
    """A MySQL URL is a clear error, not a late driver failure."""
    with pytest.raises(ValueError, match="unsupported database"):
        database_url("mysql://u@db/blume", use_async=True)


def test_sealing_survives_key_rotation() -> None:
    """A value sealed with the old key opens while both keys are configured, newest first."""
    old, new = Fernet.generate_key(), Fernet.generate_key()
    sealed_before = Sealer([old]).seal("https://share.example/s/token")
    rotated = Sealer([new, old])
    assert rotated.unseal(sealed_before) == "https://share.example/s/token"
    assert Sealer([new]).unseal(rotated.seal("x")) == "x"
    with pytest.raises(ValueError, match="cannot be opened"):
        Sealer([new]).unseal(sealed_before)


def test_production_needs_a_sealing_key(tmp_path: Path) -> None:
    """With RabbitMQ configured and no key, the worker refuses to start."""
    settings = Settings(state_dir=tmp_path, amqp_url=SecretStr("amqp://broker/"))
    with pytest.raises(SealingKeyError, match="BLUME_TOKEN_SEALING_KEY"):
        Sealer.from_settings(settings)


def test_embedded_key_is_generated_private(tmp_path: Path) -> None:
    """The embedded default generates its key once, readable by its owner only."""
    settings = Settings(state_dir=tmp_path)
    first = Sealer.from_settings(settings).seal("x")
    assert Sealer.from_settings(settings).unseal(first) == "x"
    mode = stat.S_IMODE(os.stat(tmp_path / "sealing.key").st_mode)
    assert mode == 0o600


def redact(**event: Any) -> dict[str, Any]:
    return dict(redact_processor(None, "info", dict(event)))


def test_marked_keys_are_redacted_wherever_they_appear() -> None:
    """PHI- and secret-marked field names are removed, nested ones included."""
    logged = redact(
        mrn="MRN-1", sealed_link="gAAAA", extra={"patient": {"name": "DOE^JANE"}}, share_id="s"
    )
    assert logged["mrn"] == REDACTED
    assert logged["sealed_link"] == REDACTED
    assert logged["extra"]["patient"]["name"] == REDACTED
    assert logged["share_id"] == "s"


def test_values_are_scrubbed_of_addresses_tokens_and_credentials() -> None:
    """Free text loses email addresses, link tokens and URL passwords."""
    token = "y4b14mxM-C_F7GSZcUe4ei2RDSeG3_JRAM49bXLkQU8"
    logged = redact(
        error=f"550 <bob@clinic.example> rejected https://share.example/s/{token}",
        url="amqp://guest:hunter2@rabbit:5672/",
    )
    assert "bob@clinic.example" not in logged["error"]
    assert token not in logged["error"]
    assert "hunter2" not in logged["url"]


def test_json_logs_go_through_redaction(capsys: pytest.CaptureFixture[str]) -> None:
    """The configured pipeline writes JSON with the redaction applied."""
    configure_logging("INFO", "json")
    try:
        structlog.get_logger("test").info(
            "hello", recipient_email="bob@clinic.example", share_id="s"
        )
    finally:
        structlog.reset_defaults()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "hello"
    assert line["recipient_email"] == REDACTED
    assert line["share_id"] == "s"


def test_base_urls_are_normalised_once_in_the_settings() -> None:
    """A configured base URL's trailing slash is dropped as the settings load it."""
    settings = Settings(
        public_base_url="https://share.example/", portal_base_url="https://share.example/blume/"
    )
    assert settings.public_base_url == "https://share.example"
    assert settings.portal_base_url == "https://share.example/blume"


def test_a_service_connects_with_its_own_url_else_the_shared_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``BLUME_<SERVICE>_DATABASE_URL`` wins for that service; the others fall back to
    ``BLUME_DATABASE_URL`` (one process hosting several services in development)."""
    from blume_runtime.settings import Settings, service_database_env

    assert service_database_env("share_dispatcher") == "BLUME_SHARE_DISPATCHER_DATABASE_URL"
    monkeypatch.setenv("BLUME_DATABASE_URL", "postgresql://owner@db/blume")
    monkeypatch.setenv("BLUME_NOTIFIER_DATABASE_URL", "postgresql://notifier@db/blume")
    settings = Settings()
    assert settings.service_database("notifier") == "postgresql://notifier@db/blume"
    assert settings.service_database("share_dispatcher") == "postgresql://owner@db/blume"
    assert not settings.embedded_database


def test_only_a_worker_login_is_not_the_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container given only its service's own URL does not fall back to a SQLite file."""
    from blume_runtime.settings import Settings

    monkeypatch.delenv("BLUME_DATABASE_URL", raising=False)
    assert Settings().embedded_database
    monkeypatch.setenv("BLUME_ACCESS_GATEWAY_DATABASE_URL", "postgresql://gw@db/blume")
    assert not Settings().embedded_database


async def test_a_schema_view_shares_the_pool_and_names_its_schema() -> None:
    """On PostgreSQL a service's view of the process's database uses the same pool, its
    unqualified tables in the service's schema; on SQLite (no schemas) the same engine. Each
    view stages audit rows if its login can, found out before its first transaction."""
    from blume_runtime.db import Database

    shared = Database("postgresql://nobody@127.0.0.1:1/none")
    view = shared.in_schema("notifier")
    assert view.engine.pool is shared.engine.pool
    assert view.engine.get_execution_options()["schema_translate_map"] == {None: "notifier"}
    assert shared.engine.get_execution_options().get("schema_translate_map") is None
    await view.dispose()  # leaves the shared pool to its owner
    await shared.dispose()
    assert (shared.stages_audit, view.stages_audit) == (False, None)
    embedded = Database("sqlite://")
    embedded_view = embedded.in_schema("notifier")
    assert embedded_view.engine is embedded.engine
    assert not await embedded_view.resolve_audit_staging()  # no audit staging table there
    await embedded.dispose()
