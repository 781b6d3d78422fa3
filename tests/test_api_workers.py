"""`ceptoar api --workers N`: several processes serve one port, one that dies is started again, all stop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import free_port

pytestmark = pytest.mark.postgres


def _workers_of(pid: int) -> set[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(c) for c in children}


async def _until(check: object, *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {within} s")


async def _healthy(base: str) -> bool:
    try:
        async with httpx.AsyncClient(base_url=base, timeout=2) as http:
            return (await http.get("/healthz")).status_code == 200
    except httpx.TransportError:
        return False


async def _start(port: int, env: dict[str, str], *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ceptoar", "api", "--port", str(port), *extra,
        env={**os.environ, **env}, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_workers_share_the_port_come_back_after_a_kill_and_stop_together(
    pg_url: str, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"CEPTOAR_DATABASE_URL": pg_url, "CEPTOAR_VAR_DIR": str(tmp_path), "CEPTOAR_LOG_FORMAT": "json"}
    supervisor = await _start(port, env, "--workers", "2")
    try:
        await _until(lambda: len(_workers_of(supervisor.pid)) == 2, within=30, what="two workers")
        deadline = time.monotonic() + 60
        while not await _healthy(base):
            assert time.monotonic() < deadline, "the workers never answered"
            await asyncio.sleep(0.2)
        first = _workers_of(supervisor.pid)
        # Connections are spread over both: each worker holds some of 40 connections held open at once.
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
        held = {pid: _sockets(pid) for pid in first}
        for _, writer in streams:
            writer.close()
        assert all(n >= 3 for n in held.values()), held

        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        await _until(
            lambda: len(_workers_of(supervisor.pid)) == 2 and victim not in _workers_of(supervisor.pid),
            within=30,
            what="a worker started in place of the killed one",
        )
        answered = [await _healthy(base) for _ in range(20)]
        assert all(answered)

        supervisor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(supervisor.wait(), 40) == 0
        for pid in _workers_of_gone(first | {victim}):
            raise AssertionError(f"worker {pid} still runs after its supervisor stopped")
    finally:
        if supervisor.returncode is None:
            supervisor.kill()
            await supervisor.wait()


def _sockets(pid: int) -> int:
    """The TCP connections a process holds open (its listening socket is one more)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            continue
    return count


def _workers_of_gone(pids: set[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


async def test_workers_that_cannot_take_the_port_stop_the_start_with_a_message(
    pg_url: str, tmp_path: Path
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    env = {"CEPTOAR_DATABASE_URL": pg_url, "CEPTOAR_VAR_DIR": str(tmp_path)}
    try:
        supervisor = await _start(port, env, "--workers", "2")
        _, err = await asyncio.wait_for(supervisor.communicate(), 60)
    finally:
        taken.close()
    assert supervisor.returncode not in (0, None)
    assert b"a worker process could not start" in err
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use".encode() in err
    assert b"Traceback" not in err
