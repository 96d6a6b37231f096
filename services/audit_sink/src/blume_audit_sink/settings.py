"""The audit sink's own settings (``BLUME_AUDIT_*``), beside the runtime's ``Settings``.

Kept here so the audit store's keys, checkpoint directory and API tokens are configured in
one place without every worker having to know about them.
"""

from __future__ import annotations

from pathlib import Path

from blume_runtime.settings import Settings
from pydantic import SecretStr
from pydantic_settings import BaseSettings


class AuditSettings(BaseSettings):
    # Read as the runtime's settings are: ``BLUME_*``, other variables ignored.
    model_config = Settings.model_config

    audit_signing_key: SecretStr | None = None
    """Ed25519 private key for checkpoints: PEM (PKCS#8) or base64 of the 32-byte seed."""
    audit_signing_key_file: Path | None = None
    audit_verify_keys: str | None = None
    """Comma-separated public keys (PEM or base64) that signed older checkpoints (rotation)."""
    audit_verify_keys_file: Path | None = None
    audit_checkpoint_dir: Path | None = None
    """Where signed checkpoints are written (mount write-once storage here)."""
    audit_checkpoint_every_events: int = 1000
    audit_checkpoint_every_seconds: float = 300.0
    audit_seal_batch_size: int = 2000
    audit_seal_interval_seconds: float = 30.0
    """The sealer's round when no commit wakes it (see ``sealer``): not a sealing delay."""
    audit_api_tokens: SecretStr | None = None
    """Comma-separated ``label:sha256hex`` entries: hashes of the compliance API's tokens."""
    audit_api_tokens_file: Path | None = None


def checkpoint_dir(settings: Settings, audit: AuditSettings) -> Path | None:
    """The configured directory, or on the embedded default one in the state directory."""
    if audit.audit_checkpoint_dir is not None:
        return audit.audit_checkpoint_dir
    return settings.state_dir / "audit-checkpoints" if settings.embedded_broker else None
