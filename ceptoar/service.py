"""`ceptoar serve`: the dispatcher, the mailer, the sweeper and the escalator, plus mailer processes.

A serve runs the roles it is given (`Role`; by default every one but the
HTTP endpoint, which the command line runs beside it): any number of
hosts may run any roles against one RabbitMQ and one PostgreSQL. With the
mailer role, `mailer_processes` more than one keeps that many minus one
`python -m ceptoar.mail` children working the same job queues, so a
fan-out uses every core. A child that dies is started again; the claim on
each delivery row keeps two processes from sending the same mail.

The sweeper is what makes a dead worker or a lost job harmless: a delivery
left `sending` past its lease (checked every heartbeat, `ceptoar.store.leases`:
a live worker renews its leases, a dead one's lapse within `lease_seconds`,
and one of this host that no longer runs at once), an alert whose jobs were never confirmed
(with the deliveries it left pending written first), and a delivery left
queued (or deferred) longer than any job should take get their jobs
published again; the claim decides whether anything is sent. The
escalator reminds the silent organisations of alerts past their deadlines
(`ceptoar.dispatch.escalation`). Each is work for one host per tick: on
PostgreSQL an advisory lock (`Store.exclusive`) lets one host of many do
it and the others skip that tick. SQLite is single-host: a second serve
on the same database file is refused (`single_serve`).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import AsyncExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

from ceptoar.bus import by_lane, lane_for
from ceptoar.compose.digest import send_due
from ceptoar.config import Settings
from ceptoar.dispatch import Dispatcher, load_rules
from ceptoar.dispatch.escalation import escalate_due
from ceptoar.errors import CeptoarError, ConfigError
from ceptoar.health import HealthApp
from ceptoar.log import get_logger
from ceptoar.mail.mailer import Mailer
from ceptoar.mail.process import open_mailer
from ceptoar.metrics import metrics
from ceptoar.model.digest import Schedule
from ceptoar.priority import BulkGate
from ceptoar.retry import Stopping, pause
from ceptoar.runtime import Components, keep_child, open_components, serve_asgi
from ceptoar.store import Actor
from ceptoar.store.engine import sqlite_file
from ceptoar.store.leases import heartbeat

__all__ = [
    "DEFAULT_ROLES",
    "AlertTimes",
    "AlreadyServed",
    "Role",
    "parse_roles",
    "reclaim",
    "run_service",
    "single_serve",
    "sweep",
    "tick",
]

log = get_logger(__name__)


async def sweep(c: Components) -> int:
    """Publish jobs again for expired leases and unconfirmed alerts; return how many. Also deletes the
    portal's expired sessions and sign-in links."""
    republished = 0
    stale = datetime.now(UTC) - timedelta(seconds=c.settings.sweep_seconds)
    for alert_id, severity in await c.store.alerts.unpublished(older_than=stale):
        async for _ in c.store.alerts.store_pending(alert_id):  # left by a dispatcher that died
            pass
        ids = await c.store.alerts.queued_delivery_ids(alert_id)
        await c.bus.publish_jobs(ids, lane=lane_for(severity), batch=c.settings.publish_batch)
        await c.store.alerts.mark_published(alert_id)
        republished += len(ids)
    republished += await reclaim(c)
    now = datetime.now(UTC)
    lease = timedelta(seconds=c.settings.lease_seconds)
    lost = await c.store.deliveries.stale(
        queued_before=now - lease,
        deferred_before=now - lease - timedelta(seconds=max(c.settings.retry_delays)),
    )
    if lost:
        await c.bus.publish_lanes(by_lane(lost), batch=c.settings.publish_batch)
        republished += len(lost)
    if republished:
        log.warning("sweep.republished", jobs=republished)
    if forgotten := await c.store.portal.forget_expired():
        log.info("sweep.portal_expired", rows=forgotten)
    return republished


async def reclaim(c: Components) -> int:
    """Publish jobs again for deliveries whose holder is gone; return how many.

    A holder on this host whose process no longer runs has its leases ended
    at once; any other's run out a lease after its last renewal.
    """
    for holder, n in (await c.store.leases.lapse_dead_holders()).items():
        log.warning("leases.holder_gone", holder=holder, deliveries=n)
    expired = await c.store.deliveries.expired_leases()
    if expired:
        await c.bus.publish_lanes(by_lane(expired), batch=c.settings.publish_batch)
        log.warning("leases.reclaimed", jobs=len(expired))
    return len(expired)


class Role(StrEnum):
    """A part of the service a host runs."""

    DISPATCHER = "dispatcher"
    MAILER = "mailer"
    SWEEPER = "sweeper"
    ESCALATOR = "escalator"
    API = "api"


# What `ceptoar serve` runs unless told: everything but the HTTP endpoint, which listens on a port.
DEFAULT_ROLES: Final = frozenset(Role) - {Role.API}


def parse_roles(text: str) -> frozenset[Role]:
    """Roles named with commas (`all` for every one); ValueError naming what is not a role."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return frozenset(Role)
    unknown = [name for name in names if name not in Role.__members__.values()]
    if unknown or not names:
        known = ", ".join(r.value for r in Role)
        raise ValueError(f"not a role: {', '.join(unknown) or repr(text)} (roles: {known}, or all)")
    return frozenset(Role(name) for name in names)


class AlreadyServed(CeptoarError):
    """Another `ceptoar serve` already uses this SQLite database file."""


@contextmanager
def single_serve(settings: Settings) -> Iterator[None]:
    """On SQLite, hold the database file for this serve; AlreadyServed if another one holds it.

    SQLite is single-host: its locks do not reach across hosts, and two
    sweepers on one file would both act. The lock is an `flock` on
    `DATABASE.serve` beside the file, which holds the holder's pid; the
    system lets go of it when the process ends, however it ends.
    """
    database = sqlite_file(settings.db_url)
    if database is None:
        yield
        return
    database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(database.with_name(f"{database.name}.serve"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise AlreadyServed(
                f"{database} is already served by another ceptoar serve (pid {holder}). SQLite is "
                "single-host: one serve per database file. Several serves or hosts need PostgreSQL "
                "(CEPTOAR_DATABASE_URL=postgresql+asyncpg://...)."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


class AlertTimes:
    """Observes, once per alert as it settles, the seconds from its creation to its first and last mail.

    In the sweeper's tick, for alerts created since this process started
    (and in the last day). Should the sweep move to another host, that
    host observes the alerts it has not seen itself.
    """

    def __init__(self) -> None:
        self._started = datetime.now(UTC)
        self._seen: dict[str, datetime] = {}

    async def observe(self, c: Components) -> int:
        now = datetime.now(UTC)
        since = max(self._started, now - timedelta(days=1))
        self._seen = {a: created for a, created in self._seen.items() if created >= since}
        m, observed = metrics(), 0
        for alert_id, created, first, last in await c.store.alerts.settled_since(since):
            if alert_id not in self._seen:
                m.first_mail_seconds.observe((first - created).total_seconds())
                m.last_mail_seconds.observe((last - created).total_seconds())
                self._seen[alert_id] = created
                observed += 1
        return observed


async def tick(c: Components, roles: Collection[Role], times: AlertTimes | None = None) -> dict[str, bool]:
    """One tick of the once-per-tick work this host's roles hold; which of it this host did.

    Each is done by one host of all that run it (`Store.exclusive`); a
    failure is logged and the next tick tries again.
    """

    async def sweeping() -> None:
        await sweep(c)
        if times is not None:
            await times.observe(c)

    async def digests() -> None:
        who = Actor("schedule", host=socket.gethostname()[:255])
        for sent in await send_due(c.settings, c.store, c.bus, now=datetime.now(UTC), who=who):
            log.info("digest.scheduled", alert_id=sent.alert_id, sent=sent.sent_now, addresses=sent.addresses)

    did: dict[str, bool] = {}
    # (role, the work's name and lock, the work, what a failure logs)
    work: list[tuple[Role, str, Callable[[], Awaitable[object]], str]] = [
        (Role.SWEEPER, "sweeper", sweeping, "sweep.failed"),
        (Role.ESCALATOR, "escalator", lambda: escalate_due(c.store, c.bus, c.settings), "escalation.failed"),
        (Role.ESCALATOR, "digest", digests, "digest.failed"),
    ]
    for role, name, job, failed in work:
        if role not in roles:
            continue
        try:
            async with c.store.exclusive(name) as mine:
                if mine:
                    await job()
                did[name] = mine
        except Exception:
            log.exception(failed)
            did[name] = False
    return did


async def _ticks(c: Components, roles: Collection[Role], stop: asyncio.Event) -> None:
    """The tick every `sweep_seconds`; between ticks, a sweeper host reclaims lapsed leases each heartbeat."""
    times = AlertTimes()
    beat = min(heartbeat(c.settings.lease_seconds), c.settings.sweep_seconds)
    while not stop.is_set():
        await tick(c, roles, times)
        next_tick = time.monotonic() + c.settings.sweep_seconds
        while not stop.is_set() and time.monotonic() + beat < next_tick:
            await pause(beat, stop=stop)
            if Role.SWEEPER in roles:
                await _reclaim_once(c)
        await pause(max(0.0, next_tick - time.monotonic()), stop=stop)


async def _reclaim_once(c: Components) -> None:
    """`reclaim`, by one sweeper host of several; a failure is logged and the next beat tries again."""
    try:
        async with c.store.exclusive("sweeper") as mine:
            if mine:
                await reclaim(c)
    except Exception:
        log.exception("leases.reclaim_failed")




async def _mailer_process(stop: asyncio.Event, started: asyncio.Event) -> None:
    """Keep one `python -m ceptoar.mail` child running until `stop`; it inherits the environment."""

    async def start() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ceptoar.mail", stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        if (await proc.stdout.readline()).strip() == b"ready":
            log.info("mailer.process_started", pid=proc.pid)
        started.set()
        return proc

    try:
        # The child stops by itself once its batches in flight are done (`ceptoar.mail.process`).
        await keep_child(start, stop, exited="mailer.process_exited")
    finally:
        started.set()


async def _closed(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


async def run_service(
    settings: Settings,
    stop: asyncio.Event,
    *,
    roles: Collection[Role] = DEFAULT_ROLES,
    ready: asyncio.Event | None = None,
    mailer_processes: int = 1,
) -> None:
    """Run `roles` (but the HTTP endpoint) until `stop` is set; batches in flight finish, unacked jobs return.

    With the mailer role, `mailer_processes` above one starts that many minus one mailer-only children.
    """
    try:
        Schedule.parse(settings.digest_schedule)
    except ValueError as exc:
        raise ConfigError(f"digest_schedule (CEPTOAR_DIGEST_SCHEDULE): {exc}") from exc
    async with AsyncExitStack() as stack:
        gate = BulkGate()
        mailer: Mailer | None = None
        try:
            if Role.MAILER in roles:
                c, mailer = await open_mailer(settings, stack, name="ceptoar-serve", stop=stop, gate=gate)
            else:
                c = await open_components(settings, stack, name="ceptoar-serve", stop=stop)
        except Stopping:
            return  # stopped while the database or the broker was still away
        # A process of this host that died (this serve's predecessor, killed) sends nothing more:
        # its claims go back now rather than a lease later.
        try:
            await reclaim(c)
        except Exception:
            log.exception("leases.reclaim_failed")
        counts = await c.store.subscribers.counts()
        if counts.addresses == 0:
            log.warning("registry.empty", hint="ceptoar subscribers import subscribers/registry.csv")
        children = [asyncio.Event() for _ in range(mailer_processes - 1)] if mailer is not None else []
        tasks = _start_roles(c, mailer, roles, stop, gate=gate, children=children)
        for started in children:
            await started.wait()
        log.info(
            "service.started",
            roles=sorted(r.value for r in roles),
            prefix=settings.prefix,
            relay=None if mailer is None else mailer.relay,
            organisations=counts.organisations,
            addresses=counts.addresses,
            mailer_processes=len(children) + 1 if mailer is not None else 0,
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
        if not tasks:
            await stop.wait()
        else:
            await _until_done(tasks, stop)
        if mailer is not None:
            # The dispatcher may hand off after the mailer's loops ended.
            await mailer.drain()
        log.info("service.stopped")


def _start_roles(
    c: Components,
    mailer: Mailer | None,
    roles: Collection[Role],
    stop: asyncio.Event,
    *,
    gate: BulkGate,
    children: list[asyncio.Event],
) -> list[asyncio.Task[None]]:
    """A task for each role of this host (a mailer child each, set when it started), and the metrics port."""
    settings, tasks = c.settings, []
    if Role.DISPATCHER in roles:
        dispatcher = Dispatcher(
            store=c.store,
            bus=c.bus,
            settings=settings,
            rules=load_rules(settings.rules),
            gate=gate,
            # A critical alert's first deliveries go to this process's mailer, if it has one.
            hand_off=None if mailer is None else lambda claimed: mailer.hand_off(claimed, stop),
        )
        tasks.append(asyncio.create_task(dispatcher.run(stop), name="dispatcher"))
    if mailer is not None:
        tasks.append(asyncio.create_task(mailer.run(stop, workers=settings.mailer_loops), name="mailer"))
        tasks += [
            asyncio.create_task(_mailer_process(stop, started), name="mailer-process") for started in children
        ]
    if Role.SWEEPER in roles or Role.ESCALATOR in roles:
        tasks.append(asyncio.create_task(_ticks(c, roles, stop), name="ticks"))
    if settings.metrics_port is not None:
        health = HealthApp(c, relay=None if mailer is None else mailer.relay_address)
        serving = serve_asgi(health, host=settings.metrics_host, port=settings.metrics_port, stop=stop)
        tasks.append(asyncio.create_task(serving, name="metrics"))
    return tasks


async def _until_done(tasks: list[asyncio.Task[None]], stop: asyncio.Event) -> None:
    """Wait for every task; the first that fails stops the others, and its error is raised."""
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        if task.exception() is not None:
            stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if (exc := task.exception()) is not None:
            raise exc
