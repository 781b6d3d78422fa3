"""Outages on the real services: `ceptoar serve` waits each one out and loses and doubles nothing.

Each test runs `ceptoar serve` with two mailer processes as a child
process, fans a notice out to 1,200 addresses through a relay that takes
its time (the mailers hold only a third of the jobs at once), and breaks
something in the middle: RabbitMQ is restarted, PostgreSQL is restarted,
the relay goes away for 30 s, a mailer process or `serve` itself is
killed with SIGKILL. Each ends with every address
holding the mail, no more duplicates than deliveries that were in flight
when it broke, and no process that exited on its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from ceptoar.mailbox import count
from ceptoar.registry import RegistryRow
from ceptoar.store import Store
from ceptoar.store.tables import deliveries
from tests.conftest import StackFactory
from tests.harness import MailboxServer, Relay, Stack, cli_env, notice_doc, subset

ORGANISATIONS = 600  # 1,200 addresses: twelve jobs, three times what the mailers hold at once


@dataclass
class Serve:
    """`ceptoar serve` as its own process, with what it logged."""

    proc: asyncio.subprocess.Process
    events: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def children(self) -> list[int]:
        return [int(p) for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]


async def _launch_serve(stack: Stack, *args: str, **env_vars: str) -> Serve:
    """`ceptoar serve` with `args` (two mailer processes unless told), the stack's settings and `env_vars`,
    its log read as it comes; not waited for."""
    env = {**os.environ, **cli_env(stack.settings), **env_vars}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ceptoar", "serve", *(args or ("--mailers", "2")), env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    serve = Serve(proc)

    async def read() -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            with suppress(ValueError):
                serve.events.append(json.loads(line))

    serve.reader = asyncio.create_task(read())
    return serve


async def _start_serve(stack: Stack, *args: str, **env_vars: str) -> Serve:
    """`_launch_serve`, once it logged that it started."""
    serve = await _launch_serve(stack, *args, **env_vars)
    proc = serve.proc
    for _ in range(600):
        if serve.logged("service.started"):
            return serve
        assert proc.returncode is None, serve.events
        await asyncio.sleep(0.05)
    raise AssertionError("serve did not start")


async def _stop_serve(serve: Serve) -> int:
    if serve.proc.returncode is None:
        serve.proc.terminate()
    code = await asyncio.wait_for(serve.proc.wait(), 60)
    if serve.reader is not None:
        await serve.reader
    return code


@asynccontextmanager
async def serving(stack: Stack) -> AsyncIterator[Serve]:
    serve = await _start_serve(stack)
    try:
        yield serve
    finally:
        await _stop_serve(serve)


async def _sent(store: Store, notice_id: str) -> int:
    """Deliveries of the notice's alert that are sent, or 0 while the store cannot answer."""
    try:
        alert = await store.alerts.resolve(notice_id)
        return (await store.alerts.counts(alert.id)).get("sent", 0)
    except Exception:
        return 0


async def _until_sent(store: Store, notice_id: str, at_least: int, *, within: float = 60) -> None:
    for _ in range(int(within / 0.05)):
        if await _sent(store, notice_id) >= at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{notice_id}: fewer than {at_least} sent")


async def _in_flight(store: Store) -> int:
    """Deliveries claimed and not yet recorded: the only ones an outage may double."""
    async with store.engine.connect() as conn:
        query = select(func.count()).where(deliveries.c.state == "sending")
        return int((await conn.execute(query)).scalar_one())


async def _settled(stack: Stack, notice_id: str, *, within: float = 60) -> dict[str, int]:
    for _ in range(int(within / 0.25)):
        with suppress(Exception):
            return await stack.wait_settled(notice_id, within=0.25)
        await asyncio.sleep(0.25)
    raise AssertionError(f"{notice_id} did not settle in {within}s")


def _check_mailboxes(mailbox: MailboxServer, rows: list[RegistryRow], in_flight: int) -> int:
    """Every address has the mail, and no more doubles than were in flight; return the doubles."""
    per_address = {r.email: count(mailbox.root, r.email) for r in rows}
    missing = sorted(a for a, n in per_address.items() if n == 0)
    assert not missing, f"{len(missing)} addresses never got the mail: {missing[:5]}"
    doubles = sum(n - 1 for n in per_address.values())
    assert doubles <= in_flight, f"{doubles} duplicates, but only {in_flight} deliveries were in flight"
    return doubles


def _assert_nothing_exited_on_its_own(serve: Serve, children: list[int]) -> None:
    assert serve.proc.returncode is None, f"serve exited with {serve.proc.returncode}"
    assert serve.children == children, "a mailer process exited and was restarted"
    assert not serve.logged("mailer.process_exited")


async def _fan_out(make_stack: StackFactory, mailbox: MailboxServer, rows: list[RegistryRow], **kw: Any) -> Stack:
    mailbox.handler.delay = 0.03  # type: ignore[union-attr]
    return await make_stack(
        mailbox=mailbox,
        rows=rows,
        smtp_connections=2,
        lease_seconds=3.0,
        mailer_batch=20,
        mailer_loops=1,
        **kw,
    )


async def _ridden_out(
    stack: Stack, rows: list[RegistryRow], ident: str, fault: Callable[[], Awaitable[None]]
) -> int:
    """Fan `ident` out, run `fault` once a tenth of it is sent, and check that serve rode it out.

    Returns the deliveries in flight when it broke: the most that may be doubled.
    """
    async with serving(stack) as serve:
        children = serve.children
        await stack.publish(notice_doc(id=ident))
        await _until_sent(stack.store, ident, len(rows) // 10)
        in_flight = await _in_flight(stack.store)
        await fault()
        counts = await _settled(stack, ident)
        _assert_nothing_exited_on_its_own(serve, children)
    assert counts == {"sent": len(rows)}, "no delivery may fail or be given up for the outage"
    return in_flight


@pytest.mark.postgres
async def test_a_rabbitmq_restart_mid_fan_out_is_waited_out(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], pg_url: str
) -> None:
    rows = subset(registry_rows, ORGANISATIONS)
    stack = await _fan_out(make_stack, mailbox, rows, database_url=pg_url)

    async def restart_rabbitmq() -> None:
        await _rabbitmqctl("stop_app")
        await asyncio.sleep(3)
        await _rabbitmqctl("start_app")
        await _rabbitmqctl("await_startup")
        assert await _sent(stack.store, "BROKER-1") < len(rows) * 2 // 3  # most of it is sent after

    in_flight = await _ridden_out(stack, rows, "BROKER-1", restart_rabbitmq)
    _check_mailboxes(mailbox, rows, in_flight)


@pytest.mark.postgres
async def test_a_postgresql_restart_mid_fan_out_is_waited_out(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], pg_url: str
) -> None:
    rows = subset(registry_rows, ORGANISATIONS)
    stack = await _fan_out(make_stack, mailbox, rows, database_url=pg_url)
    in_flight = await _ridden_out(stack, rows, "PGRESTART-1", _pg_restart)
    _check_mailboxes(mailbox, rows, in_flight)


async def test_the_relay_down_for_30_seconds_is_waited_out(
    make_stack: StackFactory, relay: Relay, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, ORGANISATIONS)
    stack = await _fan_out(make_stack, relay.server, rows)

    async def relay_away() -> None:
        await relay.down()
        await asyncio.sleep(30)
        await relay.up()

    in_flight = await _ridden_out(stack, rows, "RELAY-1", relay_away)
    _check_mailboxes(relay.server, rows, in_flight + relay.connections_cut)


async def test_a_mailer_process_killed_outright_loses_nothing(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, ORGANISATIONS)
    stack = await _fan_out(make_stack, mailbox, rows)
    async with serving(stack) as serve:
        (victim,) = serve.children  # serve itself sends too
        await stack.publish(notice_doc(id="KILLMAILER-1"))
        await _until_sent(stack.store, "KILLMAILER-1", len(rows) // 10)
        os.kill(victim, signal.SIGKILL)
        in_flight = await _in_flight(stack.store)
        counts = await _settled(stack, "KILLMAILER-1")
        assert serve.proc.returncode is None
        (restarted,) = serve.children
        assert restarted != victim
        assert [e["code"] for e in serve.logged("mailer.process_exited")] == [-signal.SIGKILL]
    assert counts == {"sent": len(rows)}
    _check_mailboxes(mailbox, rows, in_flight)


async def test_serve_killed_outright_and_started_again_loses_nothing(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, ORGANISATIONS)
    stack = await _fan_out(make_stack, mailbox, rows)
    first = await _start_serve(stack)
    await stack.publish(notice_doc(id="KILLSERVE-1"))
    await _until_sent(stack.store, "KILLSERVE-1", len(rows) // 10)
    first.proc.kill()
    assert await _stop_serve(first) == -signal.SIGKILL
    # Counted at once: what it had sent but not recorded is `sending` now; its mailer processes may
    # still claim and record some of those (their leases running out) before they see it gone.
    in_flight = await _in_flight(stack.store)
    await asyncio.sleep(2)  # its mailer processes stop once they see it gone
    async with serving(stack) as again:
        children = again.children
        counts = await _settled(stack, "KILLSERVE-1")
        _assert_nothing_exited_on_its_own(again, children)
    assert counts == {"sent": len(rows)}
    _check_mailboxes(mailbox, rows, in_flight)


async def _rabbitmqctl(command: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, f"rabbitmqctl {command}: {err.decode()}"


async def _pg_restart() -> None:
    """Stop the PostgreSQL server (fast: every session is cut), leave it down 3 s, start it again."""
    version = sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(x) for x in v.split(".")])[-1]
    for action in ("stop", "start"):
        proc = await asyncio.create_subprocess_exec(
            "pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, *(["-m", "fast"] if action == "stop" else []),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, f"pg_ctlcluster {action}: {err.decode()}"
        if action == "stop":
            await asyncio.sleep(3)


@pytest.mark.postgres
async def test_serve_started_while_the_database_is_away_waits_for_it(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], pg_url: str
) -> None:
    from tests.test_flow import _set_database_reachable

    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 2), database_url=pg_url)
    await stack.store.close()  # nothing of the test's own holds a connection
    await _set_database_reachable(pg_url, False)
    try:
        serve = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ceptoar",
            "serve",
            "--mailers",
            "1",
            env={**os.environ, **cli_env(stack.settings)},
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(4)
        assert serve.returncode is None, "serve gave up on the database"
    finally:
        await _set_database_reachable(pg_url, True)
    stack.store = await Store.open(pg_url)
    try:
        await stack.publish(notice_doc(id="LATE-DB-1"))
        assert await _settled(stack, "LATE-DB-1") == {"sent": 4}
    finally:
        serve.terminate()
        assert await asyncio.wait_for(serve.wait(), 60) == 0
        await stack.store.close()


@pytest.mark.parametrize("after", [0.3, 1.5, 3.0])
async def test_a_rabbitmq_restart_during_serve_start_up_is_waited_out(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], after: float
) -> None:
    """The broker goes away `after` seconds into a start-up: connecting, declaring, opening consumers
    or starting mailer processes. serve waits for it, comes up, and delivers."""
    rows = subset(registry_rows, 5)
    stack = await make_stack(mailbox=mailbox, rows=rows)
    serve = await _launch_serve(stack)
    proc = serve.proc
    try:
        await asyncio.sleep(after)
        await _rabbitmqctl("stop_app")
        await asyncio.sleep(2)
        await _rabbitmqctl("start_app")
        await _rabbitmqctl("await_startup")
        for _ in range(1200):
            if serve.logged("service.started") or proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert proc.returncode is None, f"serve exited with {proc.returncode}: {serve.events[-5:]}"
        await stack.bus.close()  # the test's own connection was cut too
        await stack.bus.connect(name="ceptoar-test")
        await stack.publish(notice_doc(id=f"STARTUP-{after}"))
        assert await _settled(stack, f"STARTUP-{after}") == {"sent": len(rows)}
        assert proc.returncode is None
    finally:
        assert await _stop_serve(serve) == 0


async def test_a_mailer_process_stops_on_sigterm_while_the_broker_takes_connections_and_never_answers(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1))

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes the handshake, answers nothing, until the client goes
        writer.close()

    hole = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = hole.sockets[0].getsockname()[1]
    env = {**os.environ, **cli_env(stack.settings), "CEPTOAR_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{port}/"}
    mailer = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ceptoar.mail", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.sleep(3)
        assert mailer.returncode is None
        mailer.send_signal(signal.SIGTERM)
        # Within the broker's 30 s to answer the connection, not never.
        _, err = await asyncio.wait_for(mailer.communicate(), 45)
        assert mailer.returncode == 0, err
    finally:
        if mailer.returncode is None:
            mailer.kill()
            await mailer.wait()
        hole.close()
