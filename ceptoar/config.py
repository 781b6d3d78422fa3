"""Settings, read once from `CEPTOAR_*` variables and an optional TOML file.

With nothing set, ceptoar runs on its embedded defaults: SQLite under
`./var/`, the built-in mailbox on localhost:2525 as relay, RabbitMQ on
localhost. `CEPTOAR_CONFIG` names a TOML file whose keys are the field names
below; environment variables win over the file.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ceptoar.sealing import SecretBox, decode_key, derived_key, load_key

__all__ = ["WELL_KNOWN_PASSWORDS", "Settings", "get_settings"]

# Passwords of default installations and the first ones people try; production refuses them.
WELL_KNOWN_PASSWORDS = frozenset(
    {"", "guest", "password", "passw0rd", "admin", "administrator", "changeme", "change-me", "secret",
     "root", "toor", "postgres", "rabbitmq", "rabbit", "mysql", "test", "default", "letmein", "ceptoar",
     "123456", "12345678", "qwerty", "welcome"}
)


class Settings(BaseSettings):
    """Every knob of a ceptoar process."""

    model_config = SettingsConfigDict(env_prefix="CEPTOAR_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    var_dir: Path = Path("var")
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    database_url: str | None = None
    smtp_url: str = "smtp://127.0.0.1:2525"
    prefix: str = Field("ceptoar", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

    mail_from: str = "alerts@ceptoar.example"
    # The envelope sender's base address: each delivery's return path is LOCAL+TOKEN@DOMAIN, its
    # token naming the delivery (`ceptoar.bounces.verp`). Unset: bounces@ the sender's domain.
    bounce_address: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+$")
    mail_from_name: str = "地方公共団体CEPTOAR"
    message_id_domain: str = "ceptoar.example"
    helo_name: str = "ceptoar.example"
    templates_dir: Path | None = None
    # Severity rules (TOML); the shipped default_rules.toml when unset.
    rules: Path | None = None

    smtp_connections: int = Field(4, ge=1, le=64)
    # Connections beside smtp_connections that only critical alerts use.
    smtp_critical_connections: int = Field(1, ge=0, le=16)
    smtp_timeout: float = Field(30.0, gt=0)
    # What the relay allows this host, all its mailer processes together: sessions at once and
    # messages a second. Unset: no cap; the sending window still learns the relay's limits.
    smtp_max_connections: int | None = Field(None, ge=1, le=1024)
    smtp_max_rate: float | None = Field(None, gt=0)
    # Throttling replies (421, 451 too much mail, ...) slow the host down and cost no attempt
    # (`ceptoar.mail.throttle`); off, they are temporary failures like any other.
    smtp_adaptive: bool = True
    # DKIM signing (`ceptoar.mail.dkim`): on when a private key file is named. The domain defaults to
    # the sender's; publish `ceptoar dkim keygen`'s TXT record at SELECTOR._domainkey.DOMAIN.
    dkim_key: Path | None = None
    dkim_selector: str = Field("ceptoar", pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    dkim_domain: str | None = Field(None, pattern=r"^[A-Za-z0-9.-]+$")
    # Delay before each retry of a deferred delivery (`ceptoar.retry`): one more attempt than
    # delays, then the delivery fails with the last reply kept.
    retry_delays: list[float] = Field(default=[10, 60, 300, 900, 3600], min_length=1)
    # How long a claimed delivery stays its worker's without word from it: the worker renews it six
    # times per lease while it works (`ceptoar.store.leases`), so a dead worker's mail goes out again
    # this soon after it died, however slow the relay.
    lease_seconds: float = Field(30.0, gt=0)
    # This host's name in the claims its processes hold (default: the system's host name). Hosts that
    # share a name but not a process table (containers given one name) need one each.
    node_name: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[^/\s]+$")
    # Seconds a mailer process gathers its sends' outcomes before it stores them together
    # (`ceptoar.mail.recorder`). Shorter: fewer mails a dead process leaves sent but not recorded, to be
    # sent again by another (at 0, at most one per SMTP session); longer: fewer writes, a faster fan-out.
    record_window: float = Field(0.1, ge=0, le=5)
    # Deliveries claimed, sent and recorded together by one mailer loop.
    mailer_batch: int = Field(200, ge=1, le=5000)
    # Batches in flight at once per process, so one batch's database work overlaps another's sending.
    mailer_loops: int = Field(2, ge=1, le=64)
    # Processes working the job queues under `ceptoar serve`; 0 means one per core.
    mailer_processes: int = Field(0, ge=0, le=64)
    publish_batch: int = Field(500, ge=1)
    # A critical alert's first deliveries, claimed as it is stored and sent by
    # the dispatching process itself, ahead of the job queue; 0: all by jobs.
    critical_handoff: int = Field(100, ge=0, le=5000)
    sweep_seconds: float = Field(30.0, gt=0)
    # Minutes after an alert was made by which each organisation should have answered, per severity
    # (`ceptoar.model.escalation`): one that has not is reminded at its addresses and sent the alert at
    # its backup addresses. Severities not named are never escalated. A JSON object in the environment.
    escalate_after: dict[str, float] = Field(default={"critical": 30, "high": 240})
    # Minutes after which an organisation still silent is listed for a phone call.
    call_after: dict[str, float] = Field(default={"critical": 60, "high": 480})

    # When `ceptoar serve` sends the security mail magazine's due issues: a cron expression in Japan's
    # time (`ceptoar.model.digest`); by default 10:00 on the first weekday of each month.
    digest_schedule: str = "0 10 1W * *"

    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=1, le=65535)
    # Processes `ceptoar api` serves HTTP with (the feed endpoint, the answer pages, the portal), on one
    # port; above one, the store should be PostgreSQL.
    api_workers: int = Field(1, ge=1, le=64)
    # The proxies in front whose X-Forwarded-For and X-Forwarded-Proto are believed (addresses or
    # networks, `*` for any); none by default: the connection's own address is the client's.
    trusted_proxies: list[str] = Field(default=[])
    # Answer-page POSTs taken from one client address per minute (LGWAN's gateways carry many
    # organisations from few addresses) and per answer link per ten minutes.
    answer_posts_per_client: int = Field(3000, ge=1)
    answer_posts_per_link: int = Field(10, ge=1)
    # Where the relay delivers what comes back to the return paths; `ceptoar serve` listens there
    # when a port is set (`ceptoar bounces serve` listens on its own).
    bounce_host: str = "127.0.0.1"
    bounce_port: int | None = Field(None, ge=1, le=65535)
    # `ceptoar serve`'s own port for /metrics (Prometheus), /healthz and /readyz; none when unset.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(None, ge=1, le=65535)
    api_max_body: int = Field(1024 * 1024, ge=1024)
    # The service's address as local governments reach it (on LGWAN, say https://ceptoar.lg.example).
    # Set, each alert mail carries its recipient's answer link there (`ceptoar.bounces.links`).
    public_url: str | None = Field(None, pattern=r"^https?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~/-]*)?$")
    # An answer link lives until its alert expires (or this long after it was sent, when it never
    # does), plus the grace period.
    answer_window_hours: float = Field(720.0, gt=0)
    answer_grace_hours: float = Field(72.0, ge=0)
    # Documents parsed at once, off the event loop, and how long one may take before it is refused.
    parse_workers: int = Field(2, ge=1, le=32)
    parse_timeout: float = Field(10.0, gt=0)

    # Seals the secrets ceptoar keeps (feeds' signing secrets); 32 bytes, URL-safe base64.
    # Unset in development: var_dir/secret.key, made on first use. Production needs it set.
    secret_key: SecretStr | None = None

    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("CEPTOAR_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @model_validator(mode="after")
    def _refuse_insecure_production(self) -> Settings:
        if self.environment != "production":
            return self
        amqp = urlsplit(self.amqp_url)
        if amqp.username in (None, "guest"):
            raise ValueError("amqp_url: production refuses the guest account")
        if self.database_url is None:
            raise ValueError("database_url: production needs an explicit database")
        urls = {"amqp_url": self.amqp_url, "database_url": self.database_url, "smtp_url": self.smtp_url}
        for name, url in urls.items():
            password = urlsplit(url).password
            if password is not None and unquote(password).lower() in WELL_KNOWN_PASSWORDS:
                raise ValueError(f"{name}: production refuses a well-known password")
        if self.secret_key is None:
            raise ValueError("secret_key: production needs an explicit key (`ceptoar secret-key` makes one)")
        return self

    def secret_box(self) -> SecretBox:
        """What seals and opens the secrets this service keeps."""
        if self.secret_key is not None:
            return SecretBox.from_text(self.secret_key.get_secret_value(), where="secret_key")
        return SecretBox.from_file(self.var_dir / "secret.key")

    def derived_key(self, purpose: str) -> bytes:
        """A key for one purpose, derived from the service's secret key (`ceptoar.sealing.derived_key`)."""
        if self.secret_key is not None:
            key = decode_key(self.secret_key.get_secret_value(), "secret_key")
        else:
            key = load_key(self.var_dir / "secret.key")
        return derived_key(key, purpose)

    @property
    def sender_domain(self) -> str:
        """The domain of the service's From address."""
        return self.mail_from.rpartition("@")[2]

    @property
    def return_path(self) -> str:
        """The return path's base address: CEPTOAR_BOUNCE_ADDRESS, else bounces@ the sender's domain."""
        return self.bounce_address or f"bounces@{self.sender_domain}"

    @property
    def db_url(self) -> str:
        """The database URL, SQLite under var_dir unless one is named."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.var_dir / 'ceptoar.db'}"

    @property
    def signing_domain(self) -> str:
        """The domain mail is DKIM-signed for: dkim_domain, else the sender's."""
        return self.dkim_domain or self.sender_domain

    @property
    def mailers(self) -> int:
        """How many processes `ceptoar serve` sends mail from: never more than the relay allows sessions."""
        wanted = self.mailer_processes or os.cpu_count() or 1
        return min(wanted, self.smtp_max_connections) if self.smtp_max_connections else wanted

    @property
    def mailbox_dir(self) -> Path:
        return self.var_dir / "mailbox"


@functools.cache
def get_settings() -> Settings:
    """The process's settings, built on first use (tests build their own `Settings`)."""
    return Settings()
