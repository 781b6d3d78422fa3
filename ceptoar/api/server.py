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
import signal
import sys
import time

from ceptoar.api.app import create_app
from ceptoar.config import Settings
from ceptoar.log import get_logger
from ceptoar.retry import pause, restart_delay
from ceptoar.runtime import serve_asgi, watch_parent

__all__ = ["serve_api", "supervise_workers"]

log = get_logger(__name__)

# A worker that exits by itself sooner than this after the start stops the whole start: its port,
# settings or database are wrong for every worker alike.
_START_GRACE = 5.0


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
        await _stop_all(first)
        return failed
    log.info("api.workers_started", workers=workers, pids=[p.pid for p in first])
    kept = [asyncio.create_task(_keep(command, proc, stop)) for proc in first]
    await asyncio.gather(*kept)
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


async def _keep(command: list[str], proc: asyncio.subprocess.Process, stop: asyncio.Event) -> None:
    """Keep one worker running until `stop`, starting it again each time it dies."""
    delay, began = 0.0, time.monotonic()
    while True:
        exited = asyncio.ensure_future(proc.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not exited.done():
            await _stop_all([proc])
            return
        delay = restart_delay(delay, time.monotonic() - began)
        log.error("api.worker_exited", pid=proc.pid, code=proc.returncode, restart_in=delay)
        if await pause(delay, stop=stop):
            return
        proc, began = await _start(command), time.monotonic()


async def _stop_all(procs: list[asyncio.subprocess.Process]) -> None:
    """SIGTERM each worker still running; SIGKILL one that has not finished its requests in 30 s."""
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            log.error("api.worker_killed", pid=proc.pid)
            proc.kill()
            await proc.wait()
