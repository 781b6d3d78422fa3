"""Helpers for tests that run the real stack: RabbitMQ, an SMTP server, a database."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select, update

from ceptoar.api.server import serve_api
from ceptoar.bus import Bus
from ceptoar.bus import delete_topology as delete_prefix
from ceptoar.config import Settings
from ceptoar.feed import parse_notice
from ceptoar.mailbox import MaildirHandler
from ceptoar.mailbox.server import mailbox_session
from ceptoar.model.notice import Format
from ceptoar.registry import RegistryRow
from ceptoar.service import run_service
from ceptoar.store import Store, StoredAlert
from ceptoar.store.tables import deliveries

REPO = Path(__file__).resolve().parents[1]
AMQP_URL = os.environ.get("CEPTOAR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_ADMIN_DSN = os.environ.get("CEPTOAR_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


T = TypeVar("T")


@contextmanager
def api_in_thread(settings: Settings, prepare: Callable[[Store], Awaitable[T]]) -> Iterator[tuple[str, T]]:
    """`ceptoar api` for real (uvicorn on loopback) in a thread of its own, for synchronous tests that drive
    it (schemathesis, hypothesis): `prepare` fills the store first; yields the base URL and what it gave.
    The application stops, and the settings' queues and exchanges are deleted, on exit."""
    port, ready = free_port(), threading.Event()
    found: dict[str, Any] = {}

    async def main() -> None:
        async with await Store.open(settings.db_url) as store:
            found["prepared"] = await prepare(store)
        stop = asyncio.Event()
        found.update(loop=asyncio.get_running_loop(), stop=stop)
        task = asyncio.create_task(serve_api(settings, stop, host="127.0.0.1", port=port))
        await wait_for_port(port, unless=task)
        ready.set()
        await task

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(60), "the API did not start"
    try:
        yield f"http://127.0.0.1:{port}", found["prepared"]
    finally:
        found["loop"].call_soon_threadsafe(found["stop"].set)
        thread.join(30)
        asyncio.run(delete_topology(settings.prefix, settings.retry_delays))


async def sent_to_all(store: Store, doc: dict[str, Any]) -> tuple[str, list[int]]:
    """An alert made from `doc` for every address of the store's registry, each delivery marked sent
    by the relay (code 250), as a finished fan-out leaves it: its id and its deliveries' ids."""
    payload = json.dumps(doc, ensure_ascii=False)
    candidates = await store.subscribers.candidates()
    stored = await store.alerts.create(
        notice=parse_notice(payload),
        payload=payload,
        fmt="json",
        severity=doc.get("severity", "medium"),
        rules=["test"],
        audience=[c.address_id for c in candidates],
        message_id_domain="ceptoar.example",
    )
    now = datetime.now(UTC)
    mine = deliveries.c.alert_id == stored.alert_id
    async with store.engine.begin() as conn:
        await conn.execute(
            update(deliveries).where(mine).values(state="sent", attempts=1, sent_at=now, last_code=250)
        )
        ids = (await conn.execute(select(deliveries.c.id).where(mine).order_by(deliveries.c.id))).scalars()
        return stored.alert_id, list(ids)


def notice_doc(**overrides: Any) -> dict[str, Any]:
    """A valid JSON notice; keyword arguments replace fields."""
    doc: dict[str, Any] = {
        "schema": "ceptoar.notice/1",
        "source": "nisc",
        "id": f"T-{time.time_ns()}",
        "sent": datetime.now(UTC).isoformat(),
        "title": "試験用の注意喚起",
        "summary": "試験のための通知です。",
        "body": "本文",
        "category": "advisory",
        "severity": "medium",
        "tlp": "CLEAR",
    }
    doc.update(overrides)
    return doc


async def delete_topology(prefix: str, retry_delays: Sequence[float]) -> None:
    """Remove every queue and exchange a test declared under `prefix`."""
    await delete_prefix(AMQP_URL, prefix=prefix, retry_delays=retry_delays)


class FaultyMailbox(MaildirHandler):
    """The built-in mailbox, but some recipients get scripted replies at RCPT.

    `script[address]` is a list of replies used in turn, one per attempt;
    when it runs out, the address is accepted. `delay` slows every message
    down, like a busy relay, so a fan-out is still running while a test acts.
    """

    def __init__(self, root: Path, script: dict[str, list[str]] | None = None) -> None:
        super().__init__(root)
        self.script = {k.lower(): list(v) for k, v in (script or {}).items()}
        self.rcpt_seen: dict[str, int] = {}
        self.delay = 0.0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        key = address.lower()
        self.rcpt_seen[key] = self.rcpt_seen.get(key, 0) + 1
        replies = self.script.get(key)
        if replies:
            return replies.pop(0)
        return await super().handle_RCPT(server, session, envelope, address, options)


@dataclass
class MailboxServer:
    """A running SMTP server filing into `root`."""

    root: Path
    port: int
    handler: MaildirHandler | None = None
    stop: Callable[[], Any] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


class Relay:
    """The in-process mailbox as a relay that can go away: its port closed and its sessions cut."""

    def __init__(self, handler: FaultyMailbox, port: int) -> None:
        self.server = MailboxServer(handler.root, port, handler)
        self._handler = handler
        self._listening: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self.connections_cut = 0

    def _session(self) -> SMTP:
        session = mailbox_session(self._handler)
        self._sessions.add(session)
        return session

    async def up(self) -> None:
        loop = asyncio.get_running_loop()
        self._listening = await loop.create_server(self._session, host="127.0.0.1", port=self.server.port)

    async def down(self) -> None:
        """Stop listening and cut every open session, as a relay that crashed."""
        assert self._listening is not None
        self._listening.close()
        for session in list(self._sessions):
            transport = session.transport
            if isinstance(transport, asyncio.Transport) and not transport.is_closing():
                transport.abort()
                self.connections_cut += 1
        await self._listening.wait_closed()
        self._listening = None


def start_mailbox_process(root: Path) -> tuple[MailboxServer, subprocess.Popen[bytes]]:
    """`ceptoar mailbox serve` in its own process, as an operator runs it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ceptoar", "mailbox", "serve", "--port", str(port), "--dir", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return MailboxServer(root, port), proc
        except OSError:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"mailbox exited: {err}") from None
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mailbox did not start listening")


@dataclass
class Stack:
    """Settings, store and a publishing bus on a test's own prefix and database."""

    settings: Settings
    store: Store
    bus: Bus
    mailbox: MailboxServer

    async def publish(self, doc: dict[str, Any] | bytes, *, fmt: Format = "json") -> None:
        """Publish as a feed that talks to RabbitMQ directly would, with no message id."""
        body = doc if isinstance(doc, bytes) else json.dumps(doc, ensure_ascii=False).encode()
        await self.bus.publish_notice(body, fmt=fmt, key=None)

    async def store_alert(
        self, doc: dict[str, Any], *, published: bool, severity: str = "medium", claim: int = 0
    ) -> StoredAlert:
        """Store an alert for every address as the dispatcher would, without publishing jobs.

        With `claim`, as a dispatcher that died before handing its first
        deliveries off and writing the rest would leave it.
        """
        stored = await self.store.alerts.create(
            notice=parse_notice(json.dumps(doc)),
            payload=json.dumps(doc),
            fmt="json",
            severity=severity,
            rules=[f"sender-{severity}"],
            audience=[c.address_id for c in await self.store.subscribers.candidates()],
            message_id_domain=self.settings.message_id_domain,
            first=claim,
            claim=claim > 0,
            lease_seconds=self.settings.lease_seconds,
        )
        if published:
            await self.store.alerts.mark_published(stored.alert_id)
        return stored

    async def wait_settled(self, ident: str, *, within: float = 120) -> dict[str, int]:
        """Wait until the alert exists and none of its deliveries is open; return its counts."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                alert = await self.store.alerts.resolve(ident)
            except LookupError:
                await asyncio.sleep(0.1)
                continue
            status = await self.store.status(alert)
            if status.settled:
                return {state: n for state, n in status.counts.items() if n}
            await asyncio.sleep(0.1)
        raise AssertionError(f"{ident} did not settle in {within}s")

    async def get_dead(self, *, within: float = 10) -> aio_pika.abc.AbstractIncomingMessage:
        """The next message in the dead-letter queue."""
        channel = await self.bus._connection.channel()  # type: ignore[union-attr]
        queue = await channel.get_queue(self.bus.names.dead)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            message = await queue.get(fail=False)
            if message is not None:
                await message.ack()
                return message
            await asyncio.sleep(0.1)
        raise AssertionError("nothing was dead-lettered")


def subset(rows: list[RegistryRow], organisations: int) -> list[RegistryRow]:
    """The addresses of the first `organisations` organisations of the registry."""
    codes = sorted({r.code for r in rows})[:organisations]
    keep = set(codes)
    return [r for r in rows if r.code in keep]


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real `ceptoar` command line in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "ceptoar", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process the test's settings: its prefix, database, relay, and
    every other setting the test chose."""
    env = {"CEPTOAR_DATABASE_URL": settings.db_url, "CEPTOAR_LOG_FORMAT": "json"}
    for name in settings.model_fields_set:
        value = getattr(settings, name)
        if value is None:
            continue
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        env[f"CEPTOAR_{name.upper()}"] = text
    return env


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[None]:
    """`ceptoar serve` (dispatcher, mailer, sweeper) on the test's loop, stopped on exit."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_service(settings, stop, ready=ready))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # raises what stopped the service
        raise AssertionError("service stopped before it was ready")
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def run_cli_async(
    *args: str, env: dict[str, str], within: float = 120, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """`run_cli` for tests whose event loop must keep running (the service is on it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ceptoar",
        *args,
        env={**os.environ, **env},
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), within)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(args), proc.returncode, out.decode(), err.decode())


async def wait_for_port(port: int, *, unless: asyncio.Task[None] | None = None, within: float = 10) -> None:
    """Wait until something listens on 127.0.0.1:port (or `unless` has ended, raising what it raised)."""
    for _ in range(int(within / 0.05)):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if unless is not None and unless.done():
                unless.result()
            await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


@asynccontextmanager
async def api_running(settings: Settings, *, port: int | None = None) -> AsyncIterator[str]:
    """`ceptoar api` on loopback (a free port unless given); yields its base URL."""
    port = port or free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve_api(settings, stop, host="127.0.0.1", port=port))
    await wait_for_port(port, unless=task)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@asynccontextmanager
async def serving(env: dict[str, str], *args: str) -> AsyncIterator[dict[str, object]]:
    """`ceptoar serve ARGS` as its own process; yields its `service.started` log line once it is up."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ceptoar", "serve", *args,
        env={**os.environ, **env}, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    drain: asyncio.Task[bytes] | None = None
    try:
        async with asyncio.timeout(60):
            while line := await proc.stderr.readline():
                if b"service.started" in line:
                    break
            else:
                raise AssertionError(f"serve {' '.join(args)} exited with {await proc.wait()}")
        drain = asyncio.create_task(proc.stderr.read())  # keep its pipe from filling
        yield json.loads(line)
    finally:
        if proc.returncode is None:
            proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        if drain is not None:
            drain.cancel()


def http_get(url: str) -> tuple[int, str]:
    """The status and body of a GET, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
