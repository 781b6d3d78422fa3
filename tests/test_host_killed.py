"""A host killed outright mid fan-out: its mail is out within a minute, doubled only where it was on the wire.

Two hosts (`ceptoar serve` with its default settings, each with the mailer
processes it starts by itself, each under its own node name) share
PostgreSQL and RabbitMQ and fan out to all 3,576 addresses through a relay
that takes its time. One host is killed with SIGKILL, its mailer processes
too, once a third is sent. Within 60 s of the kill every address has the
mail. No more addresses have it twice than the dead host had sent but not
yet recorded: with `record_window` 0, no more than it had SMTP sessions
open; by default, what it sent in the last window too. The same holds for
one host killed and started again.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from ceptoar.registry import RegistryRow
from tests.conftest import StackFactory
from tests.harness import MailboxServer, Stack, notice_doc
from tests.test_faults import (
    Serve,
    _check_mailboxes,
    _in_flight,
    _sent,
    _start_serve,
    _stop_serve,
    _until_sent,
)

pytestmark = pytest.mark.postgres

# Default settings but the relay's delay: the fan-out takes long enough to be killed a third in.
RELAY_DELAY = 0.02
WITHIN = 60.0


def _sessions_to(port: int, pids: list[int]) -> int:
    """TCP connections the processes `pids` hold open to `port` on this host (`/proc`)."""
    sockets = set()
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        for fd in fds.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                sockets.add(target[len("socket:[") : -1])
    open_sessions = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port, state, inode = int(fields[2].split(":")[1], 16), fields[3], fields[9]
        if inode in sockets and remote_port == port and state == "01":  # ESTABLISHED
            open_sessions += 1
    return open_sessions


def _kill_host(serve: Serve, relay_port: int) -> int:
    """SIGKILL `serve` and its mailer processes at once; the SMTP sessions they had open."""
    pids = [serve.proc.pid, *serve.children]
    sessions = _sessions_to(relay_port, pids)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return sessions


async def _all_sent_after(stack: Stack, ident: str, total: int, killed_at: float) -> float:
    """Seconds from the kill until every delivery of `ident` is recorded sent (or answered)."""
    await _until_sent(stack.store, ident, total, within=WITHIN)
    return time.monotonic() - killed_at


async def _fan_out_stack(
    make_stack: StackFactory, mailbox: MailboxServer, rows: list[RegistryRow], pg_url: str, **kw: float
) -> Stack:
    mailbox.handler.delay = RELAY_DELAY  # type: ignore[union-attr]
    # The test kit's own overrides put back to the defaults: a 30 s lease, a sweep every 30 s.
    return await make_stack(
        mailbox=mailbox, rows=rows, database_url=pg_url, lease_seconds=30.0, sweep_seconds=30.0, **kw
    )


@pytest.mark.parametrize("window", [None, 0.0], ids=["default-window", "no-window"])
async def test_one_of_two_hosts_killed_has_its_mail_out_within_a_minute(
    make_stack: StackFactory,
    mailbox: MailboxServer,
    registry_rows: list[RegistryRow],
    pg_url: str,
    window: float | None,
) -> None:
    kw = {} if window is None else {"record_window": window}
    stack = await _fan_out_stack(make_stack, mailbox, registry_rows, pg_url, **kw)
    total = len(registry_rows)
    host_a = await _start_serve(stack, CEPTOAR_NODE_NAME="host-a")
    host_b = await _start_serve(stack, CEPTOAR_NODE_NAME="host-b")
    try:
        await stack.publish(notice_doc(id="HOSTKILL-1"))
        await _until_sent(stack.store, "HOSTKILL-1", total // 3)
        sessions = _kill_host(host_a, mailbox.port)
        killed_at, sent_at_kill = time.monotonic(), await _sent(stack.store, "HOSTKILL-1")
        in_flight = await _in_flight(stack.store)  # both hosts' claims: the dead one's are among them
        assert await _stop_serve(host_a) == -signal.SIGKILL
        took = await _all_sent_after(stack, "HOSTKILL-1", total, killed_at)
        assert host_b.proc.returncode is None
    finally:
        await _stop_serve(host_b)
    doubles = _check_mailboxes(mailbox, registry_rows, sessions if window == 0 else in_flight)
    reclaimed = sum(e.get("jobs", 0) for e in host_b.logged("leases.reclaimed"))
    print(
        f"\none of two hosts killed at {sent_at_kill} of {total} sent (record window "
        f"{stack.settings.record_window} s): every address had the mail {took:.1f} s after the kill; "
        f"{doubles} addresses twice, {sessions} SMTP sessions were open on the dead host, {in_flight} "
        f"deliveries claimed on both; {reclaimed} reclaimed from its lapsed leases"
    )
    assert reclaimed > 0, "the dead host held claims when it died"


async def test_a_host_killed_and_started_again_sends_its_mail_at_once(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], pg_url: str
) -> None:
    stack = await _fan_out_stack(make_stack, mailbox, registry_rows, pg_url)
    total = len(registry_rows)
    first = await _start_serve(stack, CEPTOAR_NODE_NAME="host-a")
    await stack.publish(notice_doc(id="HOSTKILL-2"))
    await _until_sent(stack.store, "HOSTKILL-2", total // 3)
    sessions = _kill_host(first, mailbox.port)
    killed_at, sent_at_kill = time.monotonic(), await _sent(stack.store, "HOSTKILL-2")
    in_flight = await _in_flight(stack.store)
    assert await _stop_serve(first) == -signal.SIGKILL
    again = await _start_serve(stack, CEPTOAR_NODE_NAME="host-a")
    try:
        took = await _all_sent_after(stack, "HOSTKILL-2", total, killed_at)
    finally:
        await _stop_serve(again)
    doubles = _check_mailboxes(mailbox, registry_rows, in_flight)
    gone = again.logged("leases.holder_gone")
    print(
        f"\none host killed at {sent_at_kill} of {total} sent and started again: every address had the "
        f"mail {took:.1f} s after the kill; {doubles} addresses twice, {sessions} SMTP sessions were open, "
        f"{in_flight} deliveries claimed; "
        f"{sum(e['deliveries'] for e in gone)} claims of {len(gone)} dead processes given back at start"
    )
    assert gone, "the started host gave back its dead predecessor's claims"
    # Not a lease later: the claims went back as the host started.
    assert took < 30.0, f"{took:.1f} s: the dead processes' claims waited for their leases"
