"""What every ceptoar process shares to run: stop signals, the connected store and bus, its parent.

`ceptoar serve`, the mailer-only processes it starts (`python -m
ceptoar.mail`), the HTTP endpoint and the CLI's commands all start and stop
the same way: a stop event set by SIGINT or SIGTERM, and the store and the
bus opened (and waited for, in a long-running process) by `open_components`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

from ceptoar.bus import Bus
from ceptoar.config import Settings
from ceptoar.log import get_logger
from ceptoar.retry import outlast_outages, pause, restart_delay
from ceptoar.store import Store
from ceptoar.store.leases import identify

__all__ = [
    "Components",
    "finish_within",
    "install_stop_signals",
    "keep_child",
    "open_components",
    "serve_asgi",
    "stop_child",
    "watch_parent",
]

log = get_logger(__name__)

T = TypeVar("T")


def install_stop_signals(stop: asyncio.Event) -> None:
    """Set `stop` on SIGINT or SIGTERM, so a service finishes its batch and exits cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Set `stop` once this process has another parent: the one that started it died.

    A parent killed outright cannot stop its children; they notice it is gone.
    """
    while not await pause(1.0, stop=stop):
        if os.getppid() != parent:
            log.warning("process.parent_gone", parent=parent)
            stop.set()


@dataclass
class Components:
    """The connected parts a ceptoar process works with."""

    settings: Settings
    store: Store
    bus: Bus


async def open_components(
    settings: Settings, stack: AsyncExitStack, *, name: str, stop: asyncio.Event | None = None
) -> Components:
    """Open the store and the bus (topology declared); both close with `stack`.

    With `stop`, a long-running process: a database or broker that cannot
    be reached yet is waited for (`Stopping` once `stop` is set) instead of
    failing the start.
    """
    identify(settings.node_name)
    store = await _open(lambda: Store.open(settings.db_url), stop=stop, what="open the store")
    stack.push_async_callback(store.close)
    bus = Bus.from_settings(settings)
    stack.push_async_callback(bus.close)
    await _open(lambda: _connect(bus, name), stop=stop, what="connect to the broker")
    return Components(settings, store, bus)


async def _open(operation: Callable[[], Awaitable[T]], *, stop: asyncio.Event | None, what: str) -> T:
    if stop is None:
        return await operation()
    return await outlast_outages(operation, stop=stop, what=what)


async def _connect(bus: Bus, name: str) -> Bus:
    try:
        await bus.connect(name=name)
    except BaseException:
        await bus.close()  # a connection made before a later step failed
        raise
    return bus


async def serve_asgi(
    app: Any,
    *,
    host: str,
    port: int,
    stop: asyncio.Event,
    trusted_proxies: list[str] | None = None,
    shared: bool = False,
) -> None:
    """Serve an ASGI application with uvicorn on this event loop until `stop` is set.

    uvicorn does not handle signals here: the process's stop event decides.
    `shared`: the port is bound with SO_REUSEPORT, beside other processes
    serving it, and the kernel spreads new connections evenly among them.
    """
    import uvicorn  # only in the processes that serve HTTP

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        # uvicorn's records go to the process's own log set-up (`ceptoar.log`): JSON lines off a terminal.
        log_config=None,
        access_log=False,
        lifespan="on",
        # Open event streams (the portal's live counts) are cut after a few seconds at shutdown.
        timeout_graceful_shutdown=5,
        # Forwarded headers are believed only from the proxies named (uvicorn's own default: 127.0.0.1).
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=list(trusted_proxies or []),
        server_header=False,
    )
    server = _Server(config)
    sockets = [_shared_socket(host, port)] if shared else None
    task = asyncio.create_task(server.serve(sockets=sockets))
    await stop.wait()
    server.should_exit = True
    await task


def _shared_socket(host: str, port: int) -> socket.socket:
    """A listening socket on a port other processes of the same user may listen on too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


async def finish_within(work: asyncio.Task[Any], stop: asyncio.Event, *, grace: float, what: str) -> None:
    """Wait for `work`; once `stop` is set, give it `grace` seconds to finish what it holds, then cancel it,
    and end the process if even that does not return (a peer that never answers a close).

    A stopping process must stop: one its parent can no longer stop would hold its claims forever.
    """
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not work.done():
        done, _ = await asyncio.wait({work}, timeout=grace)
        if not done:
            log.warning("process.stop_overdue", work=what, grace=grace)
            work.cancel()
            done, _ = await asyncio.wait({work}, timeout=_CANCEL_GRACE)
            if not done:
                log.error("process.stop_forced", work=what)
                os._exit(1)
    with contextlib.suppress(asyncio.CancelledError):
        await work


# How long cancelled work may take to unwind before the process ends without it.
_CANCEL_GRACE = 5.0


Child = asyncio.subprocess.Process


async def keep_child(
    start: Callable[[], Awaitable[Child]],
    stop: asyncio.Event,
    *,
    exited: str,
    first: Child | None = None,
    kill_after: float | None = None,
) -> None:
    """Keep one child process running until `stop`, started again each time it dies (ever less often
    while it keeps dying soon, `restart_delay`); `exited` is the event logged then. At `stop` the child
    gets SIGTERM, and SIGKILL if it has not finished `kill_after` seconds later (never, when None).
    `first` is a child already started."""
    delay, proc = 0.0, first
    while True:
        began = time.monotonic()
        if proc is None:
            if stop.is_set():
                return
            proc = await start()
        ended = asyncio.ensure_future(proc.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({ended, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not ended.done():
            await stop_child(proc, kill_after=kill_after)
            return
        delay = restart_delay(delay, time.monotonic() - began)
        log.error(exited, pid=proc.pid, code=proc.returncode, restart_in=delay)
        if await pause(delay, stop=stop):
            return
        proc = None


async def stop_child(proc: Child, *, kill_after: float | None = None) -> None:
    """SIGTERM the child if it still runs and wait for it; SIGKILL it after `kill_after` seconds."""
    if proc.returncode is None:
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), kill_after)
    except TimeoutError:
        log.error("process.child_killed", pid=proc.pid, after=kill_after)
        proc.kill()
        await proc.wait()
