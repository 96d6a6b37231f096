"""Settings from the environment (``BLUME_*``). None set means the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BLUME_", extra="ignore")

    amqp_url: SecretStr | None = None
    database_url: SecretStr | None = None
    smtp_url: str | None = None
    public_base_url: str = "http://127.0.0.1:8080"
    portal_base_url: str = "http://127.0.0.1:8080/blume"
    tenant_policy_file: Path | None = None

    state_dir: Path = Path(".blume")
    """Embedded default only: the SQLite file, the mail drop and the generated sealing key."""

    token_sealing_key: SecretStr | None = None
    """Fernet key(s), comma-separated, newest first, sealing links on their way to the notifier."""
    token_sealing_key_file: Path | None = None

    mail_from: str = "Blume Share <no-reply@blume-share.example>"
    smtp_timeout_seconds: float = 15.0

    max_attempts: int = 5
    retry_delay_seconds: float = 5.0
    prefetch: int = 16
    outbox_poll_seconds: float = 1.0
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"

    @property
    def embedded_broker(self) -> bool:
        return self.amqp_url is None

    @property
    def database(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.state_dir / 'blume-share.db').resolve()}"

    @property
    def mail_drop_dir(self) -> Path:
        return self.state_dir / "mail"
