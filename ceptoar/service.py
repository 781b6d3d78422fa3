"""`ceptoar serve`: the dispatcher, the mailer and the sweeper, plus mailer processes.

One process runs the dispatcher, the sweeper and a mailer; `mailer_processes`
more than one keeps that many minus one `python -m ceptoar.mail`
children working the same job queues, so a fan-out uses every core. A child
that dies is started again; the claim on each delivery row keeps two
processes from sending the same mail.

The sweeper is what makes a dead worker or a lost job harmless: a delivery
left `sending` past its lease, an alert whose jobs were never confirmed
(with the deliveries it left pending written first), and a delivery left
queued (or deferred) longer than any job should take get their jobs
published again; the claim decides whether anything is sent. On the same
tick it escalates the silent organisations of alerts past their deadlines
(`ceptoar.dispatch.escalation`).
"""

from __future__ import annotations

import asyncio
import sys
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

from ceptoar.bus import by_lane, lane_for
from ceptoar.config import Settings
from ceptoar.dispatch import Dispatcher, load_rules
from ceptoar.dispatch.escalation import escalate_due
from ceptoar.log import get_logger
from ceptoar.mail.process import open_mailer
from ceptoar.priority import BulkGate
from ceptoar.retry import Stopping, pause
from ceptoar.runtime import Components

__all__ = ["restart_delay", "run_service", "sweep"]

log = get_logger(__name__)


async def sweep(c: Components) -> int:
    """Publish jobs again for expired leases and unconfirmed alerts; return how many."""
    republished = 0
    stale = datetime.now(UTC) - timedelta(seconds=c.settings.sweep_seconds)
    for alert_id, severity in await c.store.alerts.unpublished(older_than=stale):
        async for _ in c.store.alerts.store_pending(alert_id):  # left by a dispatcher that died
            pass
        ids = await c.store.alerts.queued_delivery_ids(alert_id)
        await c.bus.publish_jobs(ids, lane=lane_for(severity), batch=c.settings.publish_batch)
        await c.store.alerts.mark_published(alert_id)
        republished += len(ids)
    expired = await c.store.deliveries.expired_leases()
    now = datetime.now(UTC)
    lease = timedelta(seconds=c.settings.lease_seconds)
    lost = await c.store.deliveries.stale(
        queued_before=now - lease,
        deferred_before=now - lease - timedelta(seconds=max(c.settings.retry_delays)),
    )
    if expired or lost:
        await c.bus.publish_lanes(by_lane([*expired, *lost]), batch=c.settings.publish_batch)
        republished += len(expired) + len(lost)
    if republished:
        log.warning("sweep.republished", jobs=republished)
    return republished


async def _sweeper(c: Components, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await sweep(c)
        except Exception:
            log.exception("sweep.failed")
        try:
            await escalate_due(c.store, c.bus, c.settings)
        except Exception:
            log.exception("escalation.failed")
        await pause(c.settings.sweep_seconds, stop=stop)


def restart_delay(previous: float, ran: float) -> float:
    """Seconds before starting a child again that ran `ran` seconds; `previous` was the last delay.

    A child that keeps dying soon after its start (a relay or database it
    cannot reach, say) is started ever less often, up to once a minute; one
    that ran for a minute starts again after the first delay.
    """
    if ran >= _RESTART_MAX:
        return _RESTART_FIRST
    return min(max(2 * previous, _RESTART_FIRST), _RESTART_MAX)


_RESTART_FIRST, _RESTART_MAX = 1.0, 60.0


async def _mailer_process(stop: asyncio.Event, started: asyncio.Event) -> None:
    """Keep one `python -m ceptoar.mail` child running until `stop`; it inherits the environment."""
    delay = 0.0
    try:
        while not stop.is_set():
            began = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ceptoar.mail", stdout=asyncio.subprocess.PIPE
            )
            assert proc.stdout is not None
            if (await proc.stdout.readline()).strip() == b"ready":
                log.info("mailer.process_started", pid=proc.pid)
            started.set()
            exited = asyncio.ensure_future(proc.wait())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not exited.done():
                proc.terminate()
                await exited
                return
            delay = restart_delay(delay, time.monotonic() - began)
            log.error("mailer.process_exited", pid=proc.pid, code=proc.returncode, restart_in=delay)
            await pause(delay, stop=stop)
    finally:
        started.set()


async def _closed(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


async def run_service(
    settings: Settings,
    stop: asyncio.Event,
    *,
    ready: asyncio.Event | None = None,
    mailer_processes: int = 1,
) -> None:
    """Run until `stop` is set; in-flight batches finish, unacked jobs return to the queue.

    `mailer_processes` above one starts that many minus one mailer-only children.
    """
    async with AsyncExitStack() as stack:
        gate = BulkGate()
        try:
            c, mailer = await open_mailer(settings, stack, name="ceptoar-serve", stop=stop, gate=gate)
        except Stopping:
            return  # stopped while the database or the broker was still away
        counts = await c.store.subscribers.counts()
        if counts.addresses == 0:
            log.warning("registry.empty", hint="ceptoar subscribers import subscribers/registry.csv")
        rules = load_rules(settings.rules)
        dispatcher = Dispatcher(
            store=c.store,
            bus=c.bus,
            settings=settings,
            rules=rules,
            gate=gate,
            hand_off=lambda claimed: mailer.hand_off(claimed, stop),
        )
        children = [asyncio.Event() for _ in range(mailer_processes - 1)]
        tasks = [
            asyncio.create_task(dispatcher.run(stop), name="dispatcher"),
            asyncio.create_task(mailer.run(stop, workers=settings.mailer_loops), name="mailer"),
            asyncio.create_task(_sweeper(c, stop), name="sweeper"),
            *(
                asyncio.create_task(_mailer_process(stop, started), name="mailer-process")
                for started in children
            ),
        ]
        for started in children:
            await started.wait()
        log.info(
            "service.started",
            prefix=settings.prefix,
            relay=mailer.relay,
            organisations=counts.organisations,
            addresses=counts.addresses,
            mailer_processes=mailer_processes,
        )
        if settings.bounce_port is not None:
            # Only then: the parsers and the SMTP server cost a process memory it otherwise does not need.
            from ceptoar.bounces.server import ReturnsHandler, start_returns
            from ceptoar.bounces.verp import Verp

            returns = await start_returns(
                ReturnsHandler(c.store, Verp.from_settings(settings)),
                host=settings.bounce_host,
                port=settings.bounce_port,
            )
            stack.push_async_callback(_closed, returns)
            log.info("returns.listening", host=settings.bounce_host, port=settings.bounce_port)
        if ready is not None:
            ready.set()
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        # The dispatcher may hand off after the mailer's loops ended.
        await mailer.drain()
        for task in done:
            if (exc := task.exception()) is not None:
                raise exc
        log.info("service.stopped")
