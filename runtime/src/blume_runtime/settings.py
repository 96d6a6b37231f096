"""Settings from the environment (``BLUME_*``). None set means the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

HOUR = 3600.0


def parse_broker_users(text: str) -> dict[str, str]:
    """``service=user,service=user`` into a map."""
    parsed: dict[str, str] = {}
    for pair in (item.strip() for item in text.split(",")):
        if not pair:
            continue
        service, separator, user = (part.strip() for part in pair.partition("="))
        if not separator or not service or not user:
            raise ValueError("BLUME_BROKER_USERS is service=user pairs separated by commas")
        parsed[service] = user
    return parsed


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

    max_attempts: int = Field(default=5, ge=1)
    """Attempts for a failure of class ``unexpected`` (a bug) before it is dead-lettered."""
    retry_delay_seconds: float = Field(default=5.0, gt=0)
    """The first retry's delay ceiling; each later one doubles it (full jitter)."""
    retry_max_delay_seconds: float = Field(default=300.0, gt=0)
    """No retry waits longer than this, however many attempts came before."""
    retry_budget_smtp_seconds: float = Field(default=24 * HOUR, gt=0)
    retry_budget_database_seconds: float = Field(default=24 * HOUR, gt=0)
    retry_budget_broker_seconds: float = Field(default=24 * HOUR, gt=0)
    retry_budget_timeout_seconds: float = Field(default=HOUR, gt=0)
    """Budgets per error class, from the first failure; past one, a message is dead-lettered
    (cause ``exhausted``) for ops to replay. See the README's retry policy."""
    handler_timeout_seconds: float = Field(default=60.0, gt=0)
    """A handler running longer is cancelled: a transient failure of class ``timeout``."""
    max_message_bytes: int = Field(default=256 * 1024, gt=0)
    """A larger body is dead-lettered as malformed before it is parsed."""
    broker_users: str | None = None
    """``BLUME_BROKER_USERS``: ``service=user,...`` (plus ``ops``), each service's broker user.
    Unset: single-user mode, every service is the user of ``BLUME_AMQP_URL``."""
    prefetch: int = 16
    outbox_poll_seconds: float = 1.0
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"

    @field_validator("broker_users")
    @classmethod
    def _parse_broker_users(cls, value: str | None) -> str | None:
        if value is not None:
            parse_broker_users(value)
        return value

    @property
    def broker_user_of(self) -> dict[str, str]:
        """``BLUME_BROKER_USERS`` as service to user (empty in single-user mode)."""
        return parse_broker_users(self.broker_users or "")

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
