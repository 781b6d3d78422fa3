"""A mailer-only process: `python -m ceptoar.mail`, started by `ceptoar serve`.

It works the same job queues as the service's own mailer and imports only
what sending needs. It writes one line, `ready`, on stdout once it consumes,
and stops cleanly on SIGTERM or SIGINT, or once the process that started
it is gone (killed outright, it could not stop its children): its batches
in flight finish, within twice the SMTP timeout and ten seconds, after
which it stops without them.
"""

from __future__ import annotations

import asyncio
import os
import sys
from contextlib import AsyncExitStack

from ceptoar.config import Settings, get_settings
from ceptoar.log import configure_logging, get_logger
from ceptoar.mail.mailer import Mailer
from ceptoar.mail.pool import SmtpPool
from ceptoar.priority import BulkGate
from ceptoar.render import Renderer
from ceptoar.retry import Stopping
from ceptoar.runtime import Components, finish_within, install_stop_signals, open_components, watch_parent

__all__ = ["main", "open_mailer", "run_mailer"]

log = get_logger(__name__)


async def open_mailer(
    settings: Settings,
    stack: AsyncExitStack,
    *,
    name: str,
    stop: asyncio.Event,
    gate: BulkGate | None = None,
) -> tuple[Components, Mailer]:
    """The store, the bus and the SMTP pool, opened to close with `stack`, and a mailer working them.

    Raises `Stopping` when told to stop while the database or the broker was still away.
    """
    c = await open_components(settings, stack, name=name, stop=stop)
    pool = SmtpPool.from_settings(settings)
    stack.push_async_callback(pool.close)
    renderer = Renderer.from_settings(settings)
    return c, Mailer(store=c.store, bus=c.bus, pool=pool, renderer=renderer, settings=settings, gate=gate)


async def run_mailer(settings: Settings, stop: asyncio.Event, *, ready: asyncio.Event | None = None) -> None:
    """Work the job queues until `stop` is set."""
    async with AsyncExitStack() as stack:
        try:
            _, mailer = await open_mailer(settings, stack, name="ceptoar-mailer", stop=stop)
        except Stopping:
            return  # stopped while the database or the broker was still away
        work = asyncio.create_task(mailer.run(stop, workers=settings.mailer_loops), name="mailer")
        if ready is not None:
            ready.set()
        await work


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    install_stop_signals(stop)
    watching = asyncio.create_task(watch_parent(os.getppid(), stop))
    ready = asyncio.Event()
    work = asyncio.create_task(run_mailer(settings, stop, ready=ready))
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait({work, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if ready.is_set():
        sys.stdout.write("ready\n")
        sys.stdout.flush()
    # Batches in flight get the time of their sends and their record; nothing holds the process longer.
    await finish_within(work, stop, grace=2 * settings.smtp_timeout + 10, what="mailer")
    stop.set()
    await watching


def main() -> None:
    settings = get_settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    asyncio.run(_main(settings))
