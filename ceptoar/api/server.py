"""Running the HTTP application under uvicorn: in one process, or in several serving one port.

`serve_api` serves it on the running event loop until the process's stop
event is set (`ceptoar api`, and `ceptoar serve --api` beside its other
roles). `supervise_workers` is `ceptoar api --workers N`: N processes
(`python -m ceptoar api --worker-of PID`) each bind the port with
SO_REUSEPORT, so that the kernel spreads new connections evenly among them,
each with its own event loop and its own connections to the store. One that
dies is started again; SIGINT or SIGTERM stops them all, each finishing its
requests; a worker whose supervisor died stops by itself.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from ceptoar.api.app import create_app
from ceptoar.config import Settings
from ceptoar.log import get_logger
from ceptoar.retry import pause
from ceptoar.runtime import keep_child, serve_asgi, stop_child, watch_parent

__all__ = ["serve_api", "supervise_workers"]

log = get_logger(__name__)

# A worker that exits by itself sooner than this after the start stops the whole start: its port,
# settings or database are wrong for every worker alike.
_START_GRACE = 5.0
# How long a stopped worker may take to finish its requests before it is killed.
_STOP_WITHIN = 30.0


async def serve_api(
    s: Settings, stop: asyncio.Event, *, host: str, port: int, supervisor: int | None = None
) -> None:
    """Serve the HTTP application until `stop` is set; under a supervisor, on its shared port."""
    served = serve_asgi(
        create_app(s),
        host=host,
        port=port,
        stop=stop,
        trusted_proxies=s.trusted_proxies,
        shared=supervisor is not None,
    )
    if supervisor is None:
        await served
        return
    watching = asyncio.create_task(watch_parent(supervisor, stop))
    try:
        await served
    finally:
        watching.cancel()


async def supervise_workers(stop: asyncio.Event, *, host: str, port: int, workers: int) -> int:
    """Keep `workers` worker processes serving `host:port` until `stop`; the exit code for the command.

    Returns 0 after a stop, or the code of a worker that failed as all of them started.
    """
    command = [sys.executable, "-m", "ceptoar", "api", "--host", host, "--port", str(port)]
    command += ["--worker-of", str(os.getpid())]
    first = [await _start(command) for _ in range(workers)]
    failed = await _failed_start(first, stop)
    if failed is not None:
        await asyncio.gather(*(stop_child(proc, kill_after=_STOP_WITHIN) for proc in first))
        return failed
    log.info("api.workers_started", workers=workers, pids=[p.pid for p in first])
    await asyncio.gather(
        *(
            keep_child(
                lambda: _start(command), stop, exited="api.worker_exited", first=proc, kill_after=_STOP_WITHIN
            )
            for proc in first
        )
    )
    return 0


async def _start(command: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(*command)


async def _failed_start(procs: list[asyncio.subprocess.Process], stop: asyncio.Event) -> int | None:
    """The exit code of a worker that ended within the start's grace period, if one did."""
    deadline = time.monotonic() + _START_GRACE
    while time.monotonic() < deadline and not stop.is_set():
        for proc in procs:
            # A worker killed by a signal is started again like any later death; one that gave up
            # by itself (its port taken, its settings wrong) would fail again.
            if proc.returncode is not None and proc.returncode >= 0:
                log.error("api.worker_failed_to_start", pid=proc.pid, code=proc.returncode)
                return proc.returncode or 1
        await pause(0.1, stop=stop)
    return None
