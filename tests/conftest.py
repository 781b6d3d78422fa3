"""Fixtures: each test gets its own RabbitMQ prefix, database and SMTP server."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from playwright.async_api import Browser, async_playwright

from ceptoar.bus import Bus
from ceptoar.config import Settings
from ceptoar.mailbox import start_mailbox
from ceptoar.registry import RegistryRow, read_registry
from ceptoar.store import Store
from tests.harness import (
    AMQP_URL,
    PG_ADMIN_DSN,
    REPO,
    FaultyMailbox,
    MailboxServer,
    Relay,
    Stack,
    api_in_thread,
    delete_topology,
    free_port,
    start_mailbox_process,
)

RETRY_DELAYS = [0.2, 0.4]

StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture(scope="session")
def registry_rows() -> list[RegistryRow]:
    """The shipped registry: 1,788 organisations, 3,576 addresses."""
    return read_registry(REPO / "subscribers" / "registry.csv")


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def amqp_prefix(prefix: str) -> AsyncIterator[str]:
    """A fresh name prefix whose queues and exchanges are deleted afterwards."""
    yield prefix
    await delete_topology(prefix, RETRY_DELAYS)


async def _create_pg_database() -> str:
    name = f"ceptoar_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def _drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _pg_url(name: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A PostgreSQL database of the test's own, dropped afterwards."""
    name = await _create_pg_database()
    yield _pg_url(name)
    await _drop_pg_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'ceptoar.db'}"
        return
    name = await _create_pg_database()
    yield _pg_url(name)
    await _drop_pg_database(name)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url)
    yield s
    await s.close()


@pytest.fixture
def mailbox_process(tmp_path: Path) -> Iterator[MailboxServer]:
    """`ceptoar mailbox serve` as its own process."""
    server, proc = start_mailbox_process(tmp_path / "mailbox-proc")
    yield server
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
async def mailbox(tmp_path: Path) -> AsyncIterator[MailboxServer]:
    """The built-in mailbox in this process, able to answer scripted replies per address."""
    handler = FaultyMailbox(tmp_path / "mailbox")
    server = await start_mailbox(handler, port=0)
    port = server.sockets[0].getsockname()[1]
    yield MailboxServer(handler.root, port, handler)
    server.close()
    await server.wait_closed()


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    """The built-in mailbox as a relay a test can take down and bring back on the same port."""
    handler = FaultyMailbox(tmp_path / "relay")
    relay = Relay(handler, free_port())
    await relay.up()
    yield relay
    with contextlib.suppress(AssertionError):
        await relay.down()


@pytest.fixture
def make_settings(amqp_prefix: str, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "var_dir": tmp_path,
            "prefix": amqp_prefix,
            "amqp_url": AMQP_URL,
            "retry_delays": RETRY_DELAYS,
            "sweep_seconds": 1.0,
            "lease_seconds": 30.0,
            "smtp_timeout": 10.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
async def make_stack(make_settings: Callable[..., Settings], tmp_path: Path) -> AsyncIterator[StackFactory]:
    """Build a Stack: settings, an opened store loaded with `rows`, a connected bus."""
    opened: list[Stack] = []

    async def make(
        *, mailbox: MailboxServer, rows: list[RegistryRow], database_url: str | None = None, **kw: Any
    ) -> Stack:
        settings = make_settings(
            smtp_url=mailbox.url,
            database_url=database_url or f"sqlite+aiosqlite:///{tmp_path / 'ceptoar.db'}",
            **kw,
        )
        store = await Store.open(settings.db_url)
        await store.subscribers.import_rows(rows)
        bus = Bus.from_settings(settings)
        await bus.connect(name="ceptoar-test")
        stack = Stack(settings, store, bus, mailbox)
        opened.append(stack)
        return stack

    yield make
    for stack in opened:
        await stack.bus.close()
        await stack.store.close()


@pytest.fixture
async def amqp_channel() -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    yield channel
    await connection.close()


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """`ceptoar api` for real (uvicorn on loopback, SQLite, the running RabbitMQ on a prefix of its own),
    in a thread of its own, for synchronous tests that drive it (schemathesis, hypothesis).

    The registry is loaded, and a feed may post as the CAP senders and CSAF publishers the tests use.
    """
    root = tmp_path_factory.mktemp("api")
    config = Settings(
        var_dir=root,
        prefix=f"t{uuid.uuid4().hex[:12]}",
        amqp_url=AMQP_URL,
        database_url=f"sqlite+aiosqlite:///{root / 'api.db'}",
        retry_delays=RETRY_DELAYS,
    )

    async def prepare(store: Store) -> str:
        await store.subscribers.import_rows(read_registry(REPO / "subscribers" / "registry.csv"))
        new = await store.feeds.add("nisc", sources=["cap@nisc.example", "www.bsi.bund.de", "s@x.example"])
        return new.key

    with api_in_thread(config, prepare) as (base, key):
        yield base, {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, driven by Playwright."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is needed (scripts/tools installs it)"
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        await launched.close()


def screenshots(tmp_path: Path) -> Path:
    """Where a test keeps its screenshots: CEPTOAR_SCREENSHOTS (`docs` for the README's), else its own."""
    where = Path(os.environ.get("CEPTOAR_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where
