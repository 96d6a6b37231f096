"""Settings from the environment (``BLUME_*``). None set means the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

from blume_contracts.urls import base_url
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from blume_runtime.broker_users import (
    EMBEDDED_SERVICE_USER,
    BrokerUsers,
    amqp_user,
    parse_broker_users,
)

HOUR = 3600.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BLUME_", extra="ignore")

    amqp_url: SecretStr | None = None
    database_url: SecretStr | None = None
    """The migrator's (and the CLI's) database; each service falls back to it."""
    share_dispatcher_database_url: SecretStr | None = None
    link_issuer_database_url: SecretStr | None = None
    notifier_database_url: SecretStr | None = None
    audit_sink_database_url: SecretStr | None = None
    blume_publisher_database_url: SecretStr | None = None
    access_gateway_database_url: SecretStr | None = None
    """``BLUME_<SERVICE>_DATABASE_URL``: the service's own login, which may read and write
    only its own schema (``service_database``)."""
    database_role_prefix: str = Field(default="blume_", pattern=r"^[a-z][a-z0-9_]{0,40}$")
    """Migrations name each service's role ``<prefix><service>`` (``blume_share_dispatcher``)."""
    audit_copies: bool = False
    """The audit sink records every event from its copy on the exchange (it binds ``#``), and
    a service whose database has no audit staging table of its own may run. Set it on every
    service where some service's database is not the audit sink's; otherwise each service
    stages its events' audit rows in the transactions that emit them, and one that cannot
    refuses to start (``blume_runtime.db.AuditStagingUnavailableError``)."""
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
    """No retry waits longer than this, however many attempts came before; the delay-queue
    tiers reach at least this far."""
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
    prefetch: int = 16
    outbox_poll_seconds: float = 1.0
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"

    broker_users: str | None = None
    """``service=user,...`` for every service and ``ops``; unset: one user for all."""
    ops_port: Annotated[int, Field(ge=0, le=65535)] = 9464
    """``/healthz``, ``/readyz`` and ``/metrics`` of a long-running process; 0 turns it off."""
    ops_host: str = "127.0.0.1"
    """Like the gateway's ``BLUME_HTTP_HOST``: containers set ``0.0.0.0`` for their probes."""
    consumer_grace_seconds: Annotated[float, Field(ge=0)] = 60.0
    """``/healthz`` fails once a queue of this process has had no consumer this long."""
    consumer_watchdog_seconds: Annotated[float, Field(gt=0)] = 5.0
    """How often lost consumers are looked for and re-attached."""
    outbox_max_age_seconds: Annotated[float, Field(gt=0)] = 60.0
    """``/readyz`` fails while an unpublished outbox row is older than this."""
    operator: str | None = None
    """``BLUME_OPERATOR``: who runs ops commands, recorded in their audit events as
    self-asserted (the OS account is recorded from the OS itself)."""

    @field_validator("public_base_url", "portal_base_url")
    @classmethod
    def _base_url_normalised(cls, value: str) -> str:
        return base_url(value)

    @field_validator("broker_users")
    @classmethod
    def _broker_users_parse(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            parse_broker_users(value)
        return value

    @property
    def broker_user_map(self) -> BrokerUsers:
        """Service to broker user and back (single-user mode when BLUME_BROKER_USERS is unset)."""
        if self.amqp_url is None:
            return BrokerUsers(EMBEDDED_SERVICE_USER)
        connection_user = amqp_user(self.amqp_url.get_secret_value())
        if self.broker_users is None or not self.broker_users.strip():
            return BrokerUsers(connection_user)
        return BrokerUsers(connection_user, parse_broker_users(self.broker_users))

    @property
    def embedded_broker(self) -> bool:
        return self.amqp_url is None

    @property
    def embedded_database(self) -> bool:
        """No database URL at all: the embedded default's SQLite file."""
        return self.database_url is None and not any(
            self.has_own_database(name) for name in SERVICES_WITH_OWN_DATABASE
        )

    @property
    def database_pool_size(self) -> int:
        """Connections a process's pool keeps open: one per delivery it may hold in a
        transaction at once (``prefetch``: a service without group commit, the notifier,
        runs them all concurrently) and one for the outbox sweep. Past the pool, a
        transaction opens and closes a connection, and PostgreSQL a backend, of its own."""
        return self.prefetch + 1

    @property
    def database(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.state_dir / 'blume-share.db').resolve()}"

    def service_database(self, service: str) -> str:
        """The URL ``service`` connects with: ``BLUME_<SERVICE>_DATABASE_URL`` if set, else
        ``BLUME_DATABASE_URL`` (one process hosting several services in development), else
        the embedded default's SQLite file."""
        own = getattr(self, service_database_field(service), None)
        return own.get_secret_value() if isinstance(own, SecretStr) else self.database

    def has_own_database(self, service: str) -> bool:
        return getattr(self, service_database_field(service), None) is not None

    @property
    def mail_drop_dir(self) -> Path:
        return self.state_dir / "mail"


SERVICES_WITH_OWN_DATABASE: Final = (
    "share_dispatcher",
    "link_issuer",
    "notifier",
    "audit_sink",
    "blume_publisher",
    "access_gateway",
)
"""The services that may connect with a login of their own (a setting each, above)."""


def service_database_field(service: str) -> str:
    """The setting of a service's own URL; its variable is ``BLUME_`` + this, upper-cased."""
    return f"{service}_database_url"


def service_database_env(service: str) -> str:
    """``BLUME_SHARE_DISPATCHER_DATABASE_URL`` for ``share_dispatcher``."""
    return f"BLUME_{service_database_field(service).upper()}"
