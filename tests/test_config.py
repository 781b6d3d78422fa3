"""Settings: embedded defaults, environment, TOML file, refusals in production."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ceptoar.config import Settings
from ceptoar.retry import RetryPolicy


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in [k for k in os.environ if k.startswith("CEPTOAR_")]:
        monkeypatch.delenv(key)


def test_embedded_defaults() -> None:
    s = Settings()
    assert s.db_url == "sqlite+aiosqlite:///var/ceptoar.db"
    assert s.smtp_url == "smtp://127.0.0.1:2525"
    assert s.amqp_url.startswith("amqp://guest:guest@127.0.0.1:5672")
    assert s.mailbox_dir == Path("var/mailbox")
    assert RetryPolicy.from_settings(s).max_attempts == len(s.retry_delays) + 1


def test_environment_wins_over_the_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "ceptoar.toml"
    config.write_text('prefix = "from-file"\nsmtp_url = "smtp://relay.example:25"\nretry_delays = [1, 2]\n')
    monkeypatch.setenv("CEPTOAR_CONFIG", str(config))
    monkeypatch.setenv("CEPTOAR_PREFIX", "from-env")
    s = Settings()
    assert s.prefix == "from-env"
    assert s.smtp_url == "smtp://relay.example:25"
    assert s.retry_delays == [1, 2]


def test_production_refuses_the_guest_account_and_an_implicit_database() -> None:
    with pytest.raises(ValueError, match="amqp_url: production refuses the guest account"):
        Settings(environment="production", database_url="postgresql+asyncpg://db.example/c")
    with pytest.raises(ValueError, match="database_url: production needs an explicit database"):
        Settings(environment="production", amqp_url="amqp://ceptoar:Xk2-long-and-random@mq.example/")


PRODUCTION: dict[str, Any] = {
    "environment": "production",
    "amqp_url": "amqp://ceptoar:Xk2-long-and-random@mq.example/",
    "database_url": "postgresql+asyncpg://ceptoar:Jq9-long-and-random@db.example/ceptoar",
    "smtp_url": "smtp+starttls://ceptoar:Vb4-long-and-random@relay.example:587",
    "secret_key": "KoIHXkbJuT0C0Nh5W5v2KqhmqC93Xy5nK5VLfKj6cMw=",
}


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("amqp_url", "amqp://ceptoar:secret@mq.example/"),
        ("amqp_url", "amqp://admin:admin@mq.example/"),
        ("database_url", "postgresql+asyncpg://ceptoar:postgres@db.example/ceptoar"),
        ("database_url", "postgresql+asyncpg://ceptoar:Password@db.example/ceptoar"),
        ("smtp_url", "smtp+starttls://ceptoar:changeme@relay.example:587"),
        ("smtp_url", "smtps://ceptoar:%31%32%33%34%35%36@relay.example"),  # 123456, percent-encoded
    ],
)
def test_production_refuses_well_known_passwords(setting: str, value: str) -> None:
    assert Settings(**PRODUCTION).environment == "production"
    with pytest.raises(ValueError, match=f"{setting}: production refuses a well-known password"):
        Settings(**{**PRODUCTION, setting: value})


def test_production_needs_its_own_secret_key() -> None:
    with pytest.raises(ValueError, match="secret_key: production needs an explicit key"):
        Settings(**{**PRODUCTION, "secret_key": None})


def test_prefix_must_be_a_plain_name() -> None:
    with pytest.raises(ValueError, match="prefix"):
        Settings(prefix="bad prefix")


def test_secret_key_prints_a_key_production_accepts() -> None:
    from tests.harness import run_cli

    made = run_cli("secret-key", env={})
    assert made.returncode == 0
    box = Settings(**{**PRODUCTION, "secret_key": made.stdout.strip()}).secret_box()
    assert box.open(box.seal("the signing secret", context="feed:nisc"), context="feed:nisc") == (
        "the signing secret"
    )
