"""`ceptoar serve`: the dispatcher, the mailer and the sweeper in one process.

The sweeper is what makes a dead worker or a lost job harmless: a delivery
left `sending` past its lease, an alert whose jobs were never confirmed,
and a delivery left queued (or deferred) longer than any job should take
get their jobs published again; the claim decides whether anything is sent.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ceptoar.bus import Bus
from ceptoar.config import Settings
from ceptoar.dispatch import Dispatcher, load_rules
from ceptoar.log import get_logger
from ceptoar.mail.mailer import Mailer
from ceptoar.mail.pool import SmtpPool
from ceptoar.render import Renderer, default_templates_dir
from ceptoar.retry import pause
from ceptoar.store import Store

__all__ = ["Components", "open_components", "run_service", "sweep"]

log = get_logger(__name__)


@dataclass
class Components:
    """The connected parts a ceptoar process works with."""

    settings: Settings
    store: Store
    bus: Bus


async def open_components(settings: Settings, stack: AsyncExitStack, *, name: str) -> Components:
    """Open the store and the bus (topology declared); both close with `stack`."""
    store = await Store.open(settings.db_url)
    stack.push_async_callback(store.close)
    bus = Bus.from_settings(settings)
    await bus.connect(name=name)
    stack.push_async_callback(bus.close)
    return Components(settings, store, bus)


def make_renderer(settings: Settings) -> Renderer:
    return Renderer(
        settings.templates_dir or default_templates_dir(),
        sender=settings.mail_from,
        sender_name=settings.mail_from_name,
    )


async def sweep(c: Components) -> int:
    """Publish jobs again for expired leases and unconfirmed alerts; return how many."""
    republished = 0
    stale = datetime.now(UTC) - timedelta(seconds=c.settings.sweep_seconds)
    for alert_id in await c.store.alerts.unpublished(older_than=stale):
        ids = await c.store.alerts.queued_delivery_ids(alert_id)
        await c.bus.publish_jobs(ids, batch=c.settings.publish_batch)
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
        await c.bus.publish_jobs([*expired, *lost], batch=c.settings.publish_batch)
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
        await pause(c.settings.sweep_seconds, stop=stop)


async def run_service(settings: Settings, stop: asyncio.Event, *, ready: asyncio.Event | None = None) -> None:
    """Run until `stop` is set; in-flight batches finish, unacked jobs return to the queue."""
    async with AsyncExitStack() as stack:
        c = await open_components(settings, stack, name="ceptoar-serve")
        pool = SmtpPool(
            settings.smtp_url,
            size=settings.smtp_connections,
            timeout=settings.smtp_timeout,
            helo_name=settings.helo_name,
        )
        stack.push_async_callback(pool.close)
        counts = await c.store.subscribers.counts()
        if counts.addresses == 0:
            log.warning("registry.empty", hint="ceptoar subscribers import subscribers/registry.csv")
        rules = load_rules(settings.rules)
        dispatcher = Dispatcher(store=c.store, bus=c.bus, settings=settings, rules=rules)
        mailer = Mailer(
            store=c.store, bus=c.bus, pool=pool, renderer=make_renderer(settings), settings=settings
        )
        log.info(
            "service.started",
            prefix=settings.prefix,
            relay=pool.relay,
            organisations=counts.organisations,
            addresses=counts.addresses,
        )
        tasks = [
            asyncio.create_task(dispatcher.run(stop), name="dispatcher"),
            asyncio.create_task(mailer.run(stop, workers=settings.mailer_loops), name="mailer"),
            asyncio.create_task(_sweeper(c, stop), name="sweeper"),
        ]
        if ready is not None:
            ready.set()
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if (exc := task.exception()) is not None:
                raise exc
        log.info("service.stopped")
