"""docker/: the compose file against the Compose Specification, its commands and settings against ceptoar's,
the Prometheus rules and the dashboard against ceptoar's metrics, and the compose services run as plain
processes (no Docker daemon runs here): the same commands and environment, hostnames mapped to this machine.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import click
import jsonschema
import pytest
import yaml

from ceptoar.cli.main import main as ceptoar_cli
from ceptoar.config import Settings
from ceptoar.mailbox import count
from ceptoar.metrics import metrics
from ceptoar.registry import RegistryRow, write_registry
from ceptoar.service import parse_roles
from tests.harness import PG_ADMIN_DSN, REPO, free_port, http_get, run_cli_async, subset, wait_for_port

DOCKER = REPO / "docker"
SCHEMA = REPO / "tests" / "data" / "compose" / "compose-spec.json"
# What the compose file's ${VAR} interpolation is given here (the test's own secrets).
SECRETS = {
    # A letter first: one that began with `-` would be read as an option by rabbitmqctl add_user.
    "RABBITMQ_PASSWORD": "p" + secrets.token_urlsafe(12),
    "POSTGRES_PASSWORD": "p" + secrets.token_urlsafe(12),
    "CEPTOAR_SECRET_KEY": "kYQ1sOqmZ0l5d6vJ3bXh1p9rT2wF8eN4cA7uG0iL5sM=",
}


def _interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}, as `docker compose` reads them."""

    def one(match: re.Match[str]) -> str:
        name, how, rest = match.group(1), match.group(2) or "", match.group(3) or ""
        if values.get(name):
            return values[name]
        if how == ":?":
            raise AssertionError(f"{name} is required: {rest}")
        return rest

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", one, text)


def _compose(values: dict[str, str] | None = None) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(
        _interpolate((DOCKER / "compose.yaml").read_text(), values or SECRETS)
    )
    return loaded


def _ceptoar_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s.get("image") == "ceptoar:latest"}


def test_the_compose_file_is_valid_under_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    compose = _compose()
    assert not [e.message for e in validator.iter_errors(compose)]
    # The schema is strict: a misspelt key is an error, so the check above can fail.
    wrong = copy.deepcopy(compose)
    wrong["services"]["mailer"]["replica"] = 2
    assert any("replica" in e.message for e in validator.iter_errors(wrong))


def test_every_ceptoar_service_runs_a_real_command_with_real_settings() -> None:
    compose = _compose()
    services = _ceptoar_services(compose)
    assert set(services) == {"migrate", "dispatcher", "mailer", "api", "mailbox"}
    fields = {f"CEPTOAR_{name.upper()}" for name in Settings.model_fields}
    for name, service in services.items():
        command = list(service["command"])
        leaf = _parse(command)  # raises click's own error for an unknown command or option
        if leaf.parent is not None and leaf.parent.info_name == "ceptoar" and leaf.info_name == "serve":
            parse_roles(leaf.params["role_names"])
        environment = {k: str(v) for k, v in service["environment"].items()}
        assert set(environment) <= fields, f"{name}: not ceptoar settings: {set(environment) - fields}"
        settings = _settings(environment)  # every value valid, production's checks included
        assert settings.environment == "production"
    roles = {
        name: parse_roles(s["command"][s["command"].index("--role") + 1])
        for name, s in services.items()
        if "--role" in s["command"]
    }
    assert set().union(*roles.values()) == {"dispatcher", "sweeper", "escalator", "mailer", "api"}
    assert compose["services"]["migrate"]["command"] == ["db", "upgrade"]
    assert all("--no-migrate" in services[name]["command"] for name in roles)


def _parse(command: list[str]) -> click.Context:
    """The context click makes of `ceptoar COMMAND...` for the command that would run (its options parsed)."""
    ctx = click.Context(ceptoar_cli, info_name="ceptoar")
    group, args = ceptoar_cli, list(command)
    while True:
        name, *args = args
        sub = group.get_command(ctx, name)
        assert sub is not None, f"ceptoar has no command {name!r}"
        if not isinstance(sub, click.Group):
            return sub.make_context(name, args, parent=ctx)
        group, ctx = sub, click.Context(sub, info_name=name, parent=ctx)


def _settings(environment: dict[str, str]) -> Settings:
    saved = dict(os.environ)
    try:
        os.environ.update(environment)
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_the_image_runs_ceptoar_as_an_unprivileged_user_from_a_build_stage() -> None:
    lines = [
        line.split() for line in (DOCKER / "Dockerfile").read_text().splitlines() if line and line[0] != "#"
    ]
    stages = [words for words in lines if words[0] == "FROM"]
    assert len(stages) == 2 and stages[0][-2:] == ["AS", "build"]
    assert ["USER", "ceptoar"] in lines
    assert ["ENTRYPOINT", '["ceptoar"]'] in lines
    assert ["COPY", "--from=build", "/opt/ceptoar", "/opt/ceptoar"] in lines


def _metric_names(text: str) -> set[str]:
    """The families of the ceptoar_* metrics an expression names (suffixes of histograms and counters off)."""
    return {re.sub(r"_(bucket|count|sum|total)$", "", m) for m in re.findall(r"\bceptoar_[a-z_]+", text)}


def test_the_alert_rules_and_the_dashboard_name_only_metrics_ceptoar_exports() -> None:
    made = metrics()
    exported = {getattr(made, f).describe()[0].name for f in made.__dataclass_fields__}
    rules = yaml.safe_load((DOCKER / "alerts.yml").read_text())
    exprs = [r["expr"] for group in rules["groups"] for r in group["rules"]]
    dashboard = json.loads((DOCKER / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    named = set().union(*(_metric_names(e) for e in exprs))
    assert named and named <= exported, named - exported
    assert exported <= named, f"never shown or alerted on: {exported - named}"
    # Prometheus scrapes every ceptoar service but the one-shot migration and the dev mailbox, on the
    # metrics port the compose file sets.
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    port = _compose()["x-ceptoar"]["environment"]["CEPTOAR_METRICS_PORT"]
    targets = {
        t
        for job in prometheus["scrape_configs"]
        for sc in job.get("static_configs", [])
        for t in sc["targets"]
    }
    targets |= {
        f"{n}:{sd['port']}"
        for job in prometheus["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for n in sd["names"]
    }
    assert targets == {f"{name}:{port}" for name in ("dispatcher", "mailer", "api")}


@asynccontextmanager
async def _broker_user(name: str, password: str) -> AsyncIterator[None]:
    """A RabbitMQ user as the compose file's broker has (the local broker otherwise knows only guest)."""
    for args in (["add_user", name, password], ["set_permissions", "-p", "/", name, ".*", ".*", ".*"]):
        proc = await asyncio.create_subprocess_exec(
            "rabbitmqctl", *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _, err = await proc.communicate()
        assert proc.returncode == 0 or b"already exists" in err, err.decode()
    try:
        yield
    finally:
        proc = await asyncio.create_subprocess_exec(
            "rabbitmqctl", "delete_user", name, stdout=subprocess.DEVNULL
        )
        await proc.wait()


@asynccontextmanager
async def _database(role: str, password: str) -> AsyncIterator[str]:
    """A database of the test's own, owned by a role as the compose file's PostgreSQL has it."""
    name = f"ceptoar_compose_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        await admin.execute(f"ALTER ROLE \"{role}\" PASSWORD '{password}'")
        await admin.execute(f'CREATE DATABASE {name} OWNER "{role}"')
        yield name
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def _on_this_machine(
    env: dict[str, str], database: str, ports: dict[str, int], prefix: str
) -> dict[str, str]:
    """A service's environment with the compose network's hostnames as this machine's."""
    mapped = {}
    for key, value in env.items():
        value = value.replace("@rabbitmq:5672", "@127.0.0.1:5672").replace(
            "@postgres:5432/ceptoar", f"@127.0.0.1:5432/{database}"
        )
        mapped[key] = value.replace("smtp://mailbox:2525", f"smtp://127.0.0.1:{ports['mailbox']}")
    mapped["CEPTOAR_METRICS_PORT"] = str(ports["metrics"])
    mapped["CEPTOAR_PREFIX"] = prefix  # the broker is shared with the other tests
    if "CEPTOAR_API_PORT" in mapped:
        mapped["CEPTOAR_API_PORT"] = str(ports["api"])
    return mapped


def _command(service: dict[str, Any], ports: dict[str, int], root: Path) -> list[str]:
    command = [str(c) for c in service["command"]]
    if command[:2] == ["mailbox", "serve"]:
        command[command.index("--port") + 1] = str(ports["mailbox"])
        command[command.index("--dir") + 1] = str(root)
    return command


@pytest.mark.postgres
async def test_the_compose_services_deliver_a_notice_as_plain_processes(
    tmp_path: Path, registry_rows: list[RegistryRow], amqp_prefix: str
) -> None:
    compose = _compose()
    services = _ceptoar_services(compose)
    mailbox_root = tmp_path / "mailbox"
    ports = {"mailbox": free_port(), "api": free_port()}
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(_broker_user("ceptoar", SECRETS["RABBITMQ_PASSWORD"]))
        database = await stack.enter_async_context(_database("ceptoar", SECRETS["POSTGRES_PASSWORD"]))

        def env_of(name: str, metrics_port: int) -> dict[str, str]:
            raw = {k: str(v) for k, v in services[name]["environment"].items()}
            here = _on_this_machine(raw, database, {**ports, "metrics": metrics_port}, amqp_prefix)
            return {**here, "CEPTOAR_VAR_DIR": str(tmp_path / name), "CEPTOAR_LOG_FORMAT": "json"}

        # The one-shot migration first, as `depends_on: service_completed_successfully` orders it.
        migrated = await run_cli_async(
            *_command(services["migrate"], ports, mailbox_root), env=env_of("migrate", free_port())
        )
        assert migrated.returncode == 0, migrated.stderr
        operator = env_of("migrate", free_port())
        registry = tmp_path / "registry.csv"
        registry.write_text(write_registry(subset(registry_rows, 2)), encoding="utf-8")
        imported = await run_cli_async("subscribers", "import", str(registry), env=operator)
        assert imported.returncode == 0, imported.stderr
        added = await run_cli_async("feeds", "add", "nisc", "--source", "nisc", env=operator)
        assert added.returncode == 0, added.stderr
        key = added.stdout.split()[-1]
        # Then every long-running service, each replica its own process; two mailer hosts.
        replicas = {
            "mailbox": 1,
            "dispatcher": 1,
            "api": 1,
            "mailer": compose["services"]["mailer"]["deploy"]["replicas"],
        }
        ready = []
        for name, count_ in replicas.items():
            for _ in range(count_):
                metrics_port = free_port()
                env = env_of(name, metrics_port)
                await stack.enter_async_context(_process(_command(services[name], ports, mailbox_root), env))
                if name != "mailbox":
                    ready.append(metrics_port)
        await wait_for_port(ports["mailbox"], within=30)
        for port in ready:
            await wait_for_port(port, within=60)
            status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/readyz")
            assert status == 200, body
        await wait_for_port(ports["api"], within=30)
        sample = json.loads((REPO / "examples" / "notice.json").read_text(encoding="utf-8"))  # the sample notice
        status, body = await asyncio.to_thread(_post, f"http://127.0.0.1:{ports['api']}/v1/notices", key, sample)
        assert status == 202, body
        for _ in range(300):
            if count(mailbox_root) == 4:
                break
            await asyncio.sleep(0.1)
        assert count(mailbox_root) == 4


@asynccontextmanager
async def _process(command: list[str], env: dict[str, str]) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ceptoar", *command, env={**os.environ, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
        code = await asyncio.wait_for(proc.wait(), 60)
        assert code == 0, f"ceptoar {shlex.join(command)} exited with {code}"


def _post(url: str, key: str, doc: dict[str, Any]) -> tuple[int, str]:
    request = urllib.request.Request(
        url,
        data=json.dumps(doc).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
