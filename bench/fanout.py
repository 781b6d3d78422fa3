"""Fan-out speed beside the physical limit and a naive loop, in one run.

    python bench/fanout.py [--runs 3] [--addresses N] [--database-url URL] [--mailers N] [--no-compare]
                           [--dkim rsa-sha256|ed25519-sha256]
    python bench/fanout.py --scenario critical-overtakes
    python bench/fanout.py --scenario throttled-relay [--max-connections 4] [--rate 500]

Starts what it needs: Postfix's smtp-sink as the relay (installs postfix
when missing), `ceptoar serve` as its own process on a fresh name prefix
with a fresh SQLite file (or --database-url), and RabbitMQ on this machine.
The service runs as it would in production: every mail with its own return
path (VERP) and its recipient's answer link (CEPTOAR_PUBLIC_URL set). It
then measures:

- T_fanout: from publishing one notice to every one of its deliveries being
  `sent` (the last row's update time, read from the store, so the bench's
  own polling stays slow and off the cores), with the first mail's
  latency, messages per second, the service's peak memory (VmHWM, summed and of its largest process), and
  the CPU time of the service, the relay and the broker;
- T_fanout without answer links, in the same runs, for comparison;
- T_limit: Postfix's smtp-source, 4 sessions, the same number of 4 KB
  messages, into the same sink;
- T_naive: one smtplib connection, one EmailMessage with a Japanese subject
  built per message;
- T_smtp: ceptoar's SMTP client alone (`SmtpPool`, as many processes and
  sessions as the service's mailers), the alert mail rendered beforehand:
  what is left of T_fanout once the store, the broker and rendering are
  taken away.

With `--dkim`, every mail is DKIM-signed with a fresh key, and the cost of
signing one rendered alert mail is measured apart.

With `--addresses N` (a synthetic registry), each run also fans out to the
real registry, and the time per address and the largest process's peak are
printed against it (`per_address_ratio=… registry_process_peak_mb=…`).

It prints min/median/max over the runs and, as its last line, the medians:
`fanout_s=… limit_s=… naive_s=… smtp_s=… ratio_limit=… ratio_naive=… peak_rss_mb=…
process_peak_mb=… nolinks_s=…` (and `dkim_sign_us=…` with `--dkim`).

`throttled-relay` sends through `ceptoar mailbox serve --max-connections 4
--rate 500 --discard`, a relay that greets sessions over 4 with 421,
refuses messages over 500 in the last second with 451 4.7.1, and files
nothing (as smtp-sink). The service is told
the connection limit (CEPTOAR_SMTP_MAX_CONNECTIONS) but not the rate: it
learns it. The ideal is the address count over the rate. Beside it, the
same run with adaptation off (CEPTOAR_SMTP_ADAPTIVE=false: throttling
replies are temporary failures, retried after the configured delays),
stopped after `--nonadaptive-within` seconds if it has not finished. The
attempts spent on throttling replies are counted from the event log. Last
line: `throttled_s=… ideal_s=… ratio_ideal=… throttle_attempts=… nonadaptive_s=…`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ceptoar.bus import Bus, delete_topology  # noqa: E402
from ceptoar.config import Settings  # noqa: E402
from ceptoar.feed import parse_notice  # noqa: E402
from ceptoar.model.alert import AlertView  # noqa: E402
from ceptoar.registry import RegistryRow, read_registry  # noqa: E402
from ceptoar.store import Store  # noqa: E402

AMQP_URL = os.environ.get("CEPTOAR_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
# Where the answer links in the mail point (nothing needs to answer there for the bench).
PUBLIC_URL = "https://ceptoar.lg.example"
SUBJECT = "【緊急】VPN装置の認証回避の脆弱性を悪用した不正アクセスについて"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ensure_postfix() -> None:
    if shutil.which("smtp-sink") and shutil.which("smtp-source"):
        return
    print("installing postfix for smtp-sink and smtp-source", file=sys.stderr)
    subprocess.run(
        "echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections",
        shell=True,
        check=True,
    )
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "postfix"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        stdout=subprocess.DEVNULL,
    )


def listening(port: int, what: str, *, within: float = 2.0) -> None:
    """Return once something accepts connections on the loopback port; RuntimeError after `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not start")


class Sink:
    """Postfix's smtp-sink on a free loopback port: accepts and discards."""

    def __init__(self) -> None:
        self.port = free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(["smtp-sink", *user, f"127.0.0.1:{self.port}", "1000"])
        listening(self.port, "smtp-sink")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def t_limit(port: int, n: int) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            "smtp-source",
            "-s",
            "4",
            "-m",
            str(n),
            "-l",
            "4096",
            "-f",
            "bench@ceptoar.example",
            "-t",
            "sink@ceptoar.example",
            f"127.0.0.1:{port}",
        ],
        check=True,
    )
    return time.perf_counter() - start


def alert_mails(n: int) -> list[bytes]:
    """`n` rendered alert mails (the example notice in Japanese, with an answer link), one address each."""
    from ceptoar.render import Renderer, default_templates_dir

    renderer = Renderer(default_templates_dir(), sender="alerts@ceptoar.example", sender_name="CEPTOAR")
    alert = AlertView.of_notice(
        parse_notice((REPO / "examples" / "notice.json").read_bytes()),
        severity="critical",
        rules=["cvss-critical"],
        id="20261207-bench000",
    )
    return [
        renderer.message(
            alert,
            language="ja",
            to=f"a{i}@lg.example",
            message_id=f"<{i}@c.example>",
            answer_url=f"{PUBLIC_URL}/a/{i}",
        )
        for i in range(n)
    ]


def _smtp_sender(port: int, n: int, sessions: int, ready: Any, go: Any, results: Any) -> None:
    """One process of `t_smtp`: `n` rendered mails through ceptoar's SMTP pool, as fast as it takes them."""
    from ceptoar.mail import SmtpPool

    async def send() -> float:
        url = f"smtp://127.0.0.1:{port}"
        pool = SmtpPool(url, size=sessions, timeout=30, helo_name="ceptoar.example", adaptive=False)
        await pool.open()
        mails = alert_mails(50)
        ready.put(True)
        go.wait()
        begun = time.perf_counter()
        await asyncio.gather(
            *(
                pool.send(sender=f"r{i}@ceptoar.example", recipient=f"a{i}@lg.example", message=mails[i % 50])
                for i in range(n)
            )
        )
        took = time.perf_counter() - begun
        await pool.close()
        return took

    results.put(asyncio.run(send()))


def t_smtp(port: int, n: int, processes: int, sessions: int) -> float:
    """ceptoar's SMTP client alone: the service's mailer processes and sessions, mail rendered beforehand."""
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Queue(), context.Event(), context.Queue()
    shares = [n // processes + (i < n % processes) for i in range(processes)]
    senders = [
        context.Process(target=_smtp_sender, args=(port, share, sessions, ready, go, results))
        for share in shares
    ]
    for sender in senders:
        sender.start()
    for _ in senders:
        ready.get(timeout=120)
    go.set()
    took = max(results.get(timeout=600) for _ in senders)
    for sender in senders:
        sender.join()
    return float(took)


def t_naive(port: int, n: int) -> float:
    body = (REPO / "examples" / "notice.json").read_text(encoding="utf-8")
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for i in range(n):
            msg = EmailMessage()
            msg["From"] = "alerts@ceptoar.example"
            msg["To"] = f"r{i}@lg.example"
            msg["Subject"] = SUBJECT
            msg.set_content(body)
            smtp.send_message(msg)
    return time.perf_counter() - start


def registry(addresses: int | None) -> list[RegistryRow]:
    rows = read_registry(REPO / "subscribers" / "registry.csv")
    if addresses is None or addresses == len(rows):
        return rows
    orgs = sorted({(r.code, r.name) for r in rows})
    return [
        RegistryRow(code, name, f"a{i}@{code}.lg.example", "primary" if i % 2 == 0 else "security")
        for i, (code, name) in ((i, orgs[i % len(orgs)]) for i in range(addresses))
    ]


@dataclass
class Fanout:
    seconds: float
    stored: float
    dispatch: float
    first_mail: float
    peak_rss_mb: float
    # The largest peak of any one process (the dispatcher's or a mailer's).
    process_peak_mb: float
    sent: int
    # CPU seconds (user + system) spent during the fan-out, by the service, the relay and the broker.
    cpu: dict[str, float]


def cpu_seconds(pids: Iterable[int]) -> float:
    """User plus system CPU time the processes have used so far."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            # Fields after the command name: state is field 3, utime 14 and stime 15.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def broker_pids() -> list[int]:
    """RabbitMQ's Erlang VM on this machine, if it runs here."""
    found = subprocess.run(["pgrep", "-x", "beam.smp"], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


class Service:
    """`ceptoar serve` on one prefix and database, with its mailer processes."""

    def __init__(self, env: dict[str, str], mailers: int | None) -> None:
        extra = ["--mailers", str(mailers)] if mailers else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ceptoar", "serve", *extra], env=env, stderr=subprocess.PIPE
        )
        started = threading.Event()
        threading.Thread(target=self._drain, args=(started,), daemon=True).start()
        if not started.wait(60):
            raise RuntimeError("ceptoar serve did not start")

    def _drain(self, started: threading.Event) -> None:
        # Read the service's log to its end, so a full pipe never stalls it.
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            if b"service.started" in raw:
                started.set()

    def pids(self) -> list[int]:
        """The service and its mailer processes."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [self.proc.pid, *map(int, children)]

    def peaks_mb(self) -> list[float]:
        """Each process's peak resident memory (VmHWM); their sum is an upper bound of the service's peak."""
        peaks = []
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        return peaks

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


@dataclass
class Running:
    """A started service on a fresh prefix and database, with a store and a bus to watch and feed it."""

    store: Store
    bus: Bus
    service: Service

    async def publish(self, doc: dict[str, Any]) -> datetime:
        """Publish a notice; return when (wall clock) the broker was handed it."""
        doc = {**doc, "sent": datetime.now(UTC).isoformat()}
        at = datetime.now(UTC)
        await self.bus.publish_notice(json.dumps(doc, ensure_ascii=False).encode(), fmt="json", key=None)
        return at

    async def alert(self, notice_id: str, *, within: float = 120) -> AlertView:
        """The alert the service made of the notice, once it has; a RuntimeError after `within` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                return await self.store.alerts.resolve(notice_id)
            except LookupError:
                await asyncio.sleep(0.005)
        raise RuntimeError(f"the service made no alert of notice {notice_id} within {within} s")

    async def sent(self, alert_id: str) -> int:
        return (await self.store.alerts.counts(alert_id)).get("sent", 0)

    async def until_sent(
        self, alert_id: str, total: int, *, every: float = 0.02, within: float = 1800
    ) -> None:
        """Poll the store, as an operator's status would, until `total` deliveries are sent."""
        deadline = time.monotonic() + within
        while await self.sent(alert_id) < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every delivery was sent within {within}s")
            await asyncio.sleep(every)

    async def sent_times(self, alert_id: str) -> list[datetime]:
        """When the relay accepted each mail of the alert, in order; checks each was claimed once."""
        return sorted(r["sent_at"] for r in await self._sent_rows(alert_id))

    async def all_sent_at(self, alert_id: str) -> datetime:
        """When the last delivery row of the alert was recorded `sent`."""
        last: datetime = max(r["updated_at"] for r in await self._sent_rows(alert_id))
        return last

    async def _sent_rows(self, alert_id: str) -> list[dict[str, Any]]:
        rows = await self.store.deliveries.report(alert_id)
        twice = [r["email"] for r in rows if r["attempts"] != 1]
        if twice:
            raise RuntimeError(f"{len(twice)} deliveries were claimed more than once, e.g. {twice[0]}")
        return [r for r in rows if r["sent_at"]]


class ThrottlingRelay:
    """`ceptoar mailbox serve` with a relay's limits, on a free loopback port, filing into a temporary dir."""

    def __init__(self, max_connections: int, rate: float) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ceptoar-bench-relay-"))
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "ceptoar", "mailbox", "serve", "--port", str(self.port),
                "--dir", str(self.dir), "--max-connections", str(max_connections), "--rate", str(rate),
                "--discard",
            ],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        listening(self.port, "the mailbox", within=15.0)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@asynccontextmanager
async def started(
    port: int,
    rows: list[RegistryRow],
    database_url: str | None,
    mailers: int | None,
    *,
    links: bool = True,
    settings: dict[str, str] | None = None,
) -> AsyncIterator[Running]:
    work = Path(tempfile.mkdtemp(prefix="ceptoar-bench-"))
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    db_url = database_url or f"sqlite+aiosqlite:///{work / 'ceptoar.db'}"
    env = {
        **os.environ,
        "CEPTOAR_VAR_DIR": str(work),
        "CEPTOAR_PREFIX": prefix,
        "CEPTOAR_DATABASE_URL": db_url,
        "CEPTOAR_SMTP_URL": f"smtp://127.0.0.1:{port}",
        "CEPTOAR_AMQP_URL": AMQP_URL,
        "CEPTOAR_LOG_FORMAT": "json",
        "CEPTOAR_LOG_LEVEL": "info",
    }
    if links:
        env["CEPTOAR_PUBLIC_URL"] = PUBLIC_URL
    else:
        env.pop("CEPTOAR_PUBLIC_URL", None)
    env.update(settings or {})
    store = await Store.open(db_url)
    await store.subscribers.import_rows(rows, replace=True)
    service = Service(env, mailers)
    bus = Bus(AMQP_URL, prefix=prefix, retry_delays=[10])
    await bus.connect(name="bench")
    try:
        yield Running(store, bus, service)
    finally:
        service.stop()
        await bus.close()
        await store.close()
        await _drop_topology(prefix)
        shutil.rmtree(work, ignore_errors=True)


def notice(name: str, **changes: Any) -> dict[str, Any]:
    """An example notice under a fresh id, to every address unless `changes` say otherwise."""
    doc: dict[str, Any] = json.loads((REPO / "examples" / name).read_text(encoding="utf-8"))
    doc.update(id=f"BENCH-{uuid.uuid4().hex[:8]}", area=[], **changes)
    return doc


async def fanout(
    sink: Sink,
    rows: list[RegistryRow],
    database_url: str | None,
    mailers: int | None,
    *,
    links: bool = True,
    settings: dict[str, str] | None = None,
) -> Fanout:
    async with started(sink.port, rows, database_url, mailers, links=links, settings=settings) as s:
        doc = notice("notice.json")
        watched = {"service": s.service.pids(), "relay": [sink.proc.pid], "broker": broker_pids()}
        cpu0 = {k: cpu_seconds(v) for k, v in watched.items()}
        wall0 = await s.publish(doc)
        alert = await s.alert(doc["id"])
        # T_fanout is read off the rows, so the poll can be slow: it shares the cores with the service.
        await s.until_sent(alert.id, len(rows), every=0.25)
        cpu = {k: cpu_seconds(v) - cpu0[k] for k, v in watched.items()}
        peaks = s.service.peaks_mb()
        times = await s.sent_times(alert.id)
        view = await s.store.alerts.get(alert.id)
        assert view is not None and view.jobs_published_at is not None
        return Fanout(
            (await s.all_sent_at(alert.id) - wall0).total_seconds(),
            (view.created_at - wall0).total_seconds(),
            (view.jobs_published_at - wall0).total_seconds(),
            (times[0] - wall0).total_seconds(),
            sum(peaks),
            max(peaks),
            len(times),
            cpu,
        )


@dataclass
class Overtaking:
    critical_created: float
    critical_dispatched: float
    critical_first: float
    critical_all: float
    bulk_all: float
    bulk_after_critical: int
    critical_sent: int
    bulk_sent: int


async def overtaking(
    port: int, rows: list[RegistryRow], database_url: str | None, mailers: int | None, head_start: float
) -> Overtaking:
    """A medium fan-out to every address; once `head_start` of it is sent, a critical alert to all."""
    async with started(port, rows, database_url, mailers) as s:
        bulk = notice("notice-tokyo-outage.json", severity="medium")
        await s.publish(bulk)
        bulk_alert = await s.alert(bulk["id"])
        await s.until_sent(bulk_alert.id, round(head_start * len(rows)))
        critical = notice("notice.json")
        wall0 = await s.publish(critical)
        critical_alert = await s.alert(critical["id"])
        assert (bulk_alert.severity, critical_alert.severity) == ("medium", "critical")
        await s.until_sent(critical_alert.id, len(rows))
        await s.until_sent(bulk_alert.id, len(rows))
        crit, rest = await s.sent_times(critical_alert.id), await s.sent_times(bulk_alert.id)
        view = await s.store.alerts.get(critical_alert.id)
        assert view is not None and view.jobs_published_at is not None
        return Overtaking(
            (view.created_at - wall0).total_seconds(),
            (view.jobs_published_at - wall0).total_seconds(),
            (crit[0] - wall0).total_seconds(),
            (crit[-1] - wall0).total_seconds(),
            (rest[-1] - wall0).total_seconds(),
            sum(1 for t in rest if t > crit[-1]),
            len(crit),
            len(rest),
        )


@dataclass
class Throttled:
    seconds: float | None  # None: not every delivery was sent in the time allowed
    sent: int
    # Throttling refusals that cost no attempt, and attempts spent (deferred or failed events).
    refused: int
    attempts_spent: int


async def throttled(
    port: int, rows: list[RegistryRow], database_url: str | None, *, adaptive: bool, max_connections: int,
    within: float,
) -> Throttled:  # fmt: skip
    """One fan-out to every address through the throttling relay."""
    settings = {
        "CEPTOAR_SMTP_MAX_CONNECTIONS": str(max_connections),
        "CEPTOAR_SMTP_ADAPTIVE": "true" if adaptive else "false",
    }
    async with started(port, rows, database_url, None, settings=settings) as s:
        doc = notice("notice.json")
        wall0 = await s.publish(doc)
        alert = await s.alert(doc["id"])
        seconds: float | None = None
        try:
            await s.until_sent(alert.id, len(rows), every=0.25, within=within)
        except RuntimeError:
            pass
        else:
            if adaptive:  # every delivery claimed once: throttling spent no attempt
                last = await s.all_sent_at(alert.id)
            else:  # attempts are spent: read the rows without that check
                last = max(r["updated_at"] for r in await s.store.deliveries.report(alert.id))
            seconds = (last - wall0).total_seconds()
        events = await s.store.deliveries.event_counts(alert.id)
        return Throttled(
            seconds,
            await s.sent(alert.id),
            sum(n for (state, code), n in events.items() if state == "queued" and code is not None),
            sum(n for (state, _), n in events.items() if state in ("deferred", "failed")),
        )


def report_throttled(args: argparse.Namespace, rows: list[RegistryRow]) -> None:
    n = len(rows)
    ideal = n / args.rate
    adaptive: list[Throttled] = []
    fixed: list[Throttled] = []
    for run in range(args.runs):
        relay = ThrottlingRelay(args.max_connections, args.rate)
        try:
            adaptive.append(
                asyncio.run(
                    throttled(
                        relay.port, rows, args.database_url, adaptive=True,
                        max_connections=args.max_connections, within=max(120.0, 20 * ideal),
                    )
                )
            )  # fmt: skip
        finally:
            relay.stop()
        if run == 0 and args.compare:
            relay = ThrottlingRelay(args.max_connections, args.rate)
            try:
                fixed.append(
                    asyncio.run(
                        throttled(
                            relay.port, rows, args.database_url, adaptive=False,
                            max_connections=args.max_connections, within=args.nonadaptive_within,
                        )
                    )
                )  # fmt: skip
            finally:
                relay.stop()
    assert all(r.sent == n and r.seconds is not None for r in adaptive), "not every delivery was sent"
    seconds = [r.seconds for r in adaptive if r.seconds is not None]
    print(
        _header(n, args, "throttled-relay")
        + f"; relay: at most {args.max_connections} sessions, {args.rate:g} messages a second"
    )
    print(f"{'':<26} {'min':>9} {'median':>9} {'max':>9}")
    print(_row("T_fanout, adaptive", seconds, width=26))
    print(_row("  messages/s", [n / x for x in seconds], "/s", width=26))
    print(_row("  refused, no attempt", [float(r.refused) for r in adaptive], "", width=26))
    print(_row("  attempts spent on them", [float(r.attempts_spent) for r in adaptive], "", width=26))
    print(f"{'ideal (addresses / rate)':<26} {ideal:>9.3f} s")
    med = statistics.median
    ratio = med(seconds) / ideal
    print(f"ratio T_fanout/ideal {ratio:.2f}")
    nonadaptive = "not run"
    if fixed:
        f = fixed[0]
        if f.seconds is not None:
            nonadaptive = f"{f.seconds:.2f}"
            print(f"{'T_fanout, adaptation off':<26} {f.seconds:>9.3f} s")
        else:
            nonadaptive = f">{args.nonadaptive_within:g}"
            print(
                f"{'T_fanout, adaptation off':<26} not done after {args.nonadaptive_within:g} s: "
                f"{f.sent} of {n} sent"
            )
        print(f"{'  attempts spent':<26} {f.attempts_spent:>9d}")
    print(
        f"throttled_s={med(seconds):.2f} ideal_s={ideal:.2f} ratio_ideal={ratio:.2f} "
        f"throttle_attempts={max(r.attempts_spent for r in adaptive)} nonadaptive_s={nonadaptive}"
    )


async def _drop_topology(prefix: str) -> None:
    # Every queue the service declared: its retry delays are the configured ones.
    await delete_topology(AMQP_URL, prefix=prefix, retry_delays=Settings().retry_delays)


def _row(name: str, values: list[float], unit: str = "s", width: int = 18) -> str:
    return f"{name:<{width}} {min(values):>9.3f} {statistics.median(values):>9.3f} {max(values):>9.3f} {unit}"


def _header(n: int, args: argparse.Namespace, what: str) -> str:
    return (
        f"{what}: {n} addresses, {args.runs} runs, {os.cpu_count()} cores, "
        f"mailers={args.mailers or os.cpu_count()}, store={'PostgreSQL' if args.database_url else 'SQLite'}, "
        f"{datetime.now():%Y-%m-%d}"
    )


def signing_cost(algorithm: str, key: Path, n: int = 500) -> float:
    """Microseconds ceptoar takes to DKIM-sign one rendered alert mail."""
    from ceptoar.mail.dkim import DkimSigner

    signer = DkimSigner.from_file(key, domain="ceptoar.example", selector="bench")
    mails = alert_mails(n)
    start = time.perf_counter()
    for mail in mails:
        signer.sign(mail)
    return (time.perf_counter() - start) / n * 1e6


def print_fanouts(n: int, fans: list[Fanout], plain: list[Fanout], *, title: str = "T_fanout") -> None:
    """The fan-out table: min, median and max of each figure over the runs."""
    seconds = [f.seconds for f in fans]
    print(f"{'':<18} {'min':>9} {'median':>9} {'max':>9}")
    print(_row(title, seconds))
    print(_row("  alert created", [f.stored for f in fans]))
    print(_row("  dispatched", [f.dispatch for f in fans]))
    print(_row("  first mail", [f.first_mail for f in fans]))
    print(_row("  messages/s", [n / s for s in seconds], "/s"))
    print(_row("  per address", [s / n * 1e6 for s in seconds], "µs"))
    print(_row("  peak RSS", [f.peak_rss_mb for f in fans], "MB"))
    print(_row("  one process", [f.process_peak_mb for f in fans], "MB"))
    print(_row("  CPU, service", [f.cpu["service"] for f in fans]))
    print(_row("  CPU per address", [f.cpu["service"] / n * 1e6 for f in fans], "µs"))
    print(_row("  CPU, relay", [f.cpu["relay"] for f in fans]))
    print(_row("  CPU, broker", [f.cpu["broker"] for f in fans]))
    if plain:
        print(_row("T_fanout, no links", [f.seconds for f in plain]))
        print(_row("  peak RSS", [f.peak_rss_mb for f in plain], "MB"))
        print(_row("  CPU per address", [f.cpu["service"] / n * 1e6 for f in plain], "µs"))


def report_fanout(args: argparse.Namespace, rows: list[RegistryRow], sink: Sink) -> None:
    n = len(rows)
    fans: list[Fanout] = []
    plain: list[Fanout] = []
    limits: list[float] = []
    naives: list[float] = []
    smtps: list[float] = []
    settings: dict[str, str] = {}
    keys = Path(tempfile.mkdtemp(prefix="ceptoar-bench-dkim-"))
    if args.dkim:
        from ceptoar.mail.dkim import generate_key

        key = keys / "dkim.pem"
        key.write_bytes(generate_key(args.dkim))
        settings = {"CEPTOAR_DKIM_KEY": str(key), "CEPTOAR_DKIM_SELECTOR": "bench"}
    # With a synthetic registry, the real one is run too: time per address and memory against its size.
    real = registry(None)
    scaled: list[Fanout] = []
    for run in range(args.runs):
        # Alternated, so that neither variant always runs on a warmer machine.
        for links in (True, False) if run % 2 == 0 else (False, True):
            if links or args.compare:
                done = asyncio.run(
                    fanout(sink, rows, args.database_url, args.mailers, links=links, settings=settings)
                )
                (fans if links else plain).append(done)
        if n != len(real):
            scaled.append(asyncio.run(fanout(sink, real, args.database_url, args.mailers, settings=settings)))
        if args.references:
            limits.append(t_limit(sink.port, n))
            naives.append(t_naive(sink.port, n))
            mailers = args.mailers or os.cpu_count() or 1
            smtps.append(t_smtp(sink.port, n, mailers, Settings().smtp_connections))
    assert all(f.sent == n for f in fans + plain), "not every delivery was sent"
    seconds = [f.seconds for f in fans]
    signed = f", DKIM-signed ({args.dkim})" if args.dkim else ""
    print(_header(n, args, f"fan-out, each mail with its return path and answer link{signed}"))
    print_fanouts(n, fans, plain)
    if scaled:
        print_fanouts(len(real), scaled, [], title=f"T_fanout, {len(real)} addr.")
    print(f"exactly once: {n} of {n} sent, each delivery claimed once, in every run")
    med = statistics.median
    last = (
        f"fanout_s={med(seconds):.2f} per_address_us={med(seconds) / n * 1e6:.0f} "
        f"peak_rss_mb={max(f.peak_rss_mb for f in fans):.0f} "
        f"process_peak_mb={max(f.process_peak_mb for f in fans):.0f}"
    )
    if args.references:
        print(_row("T_limit", limits))
        print(_row("T_naive", naives))
        print(_row("T_smtp", smtps))
        ratio_limit, ratio_naive = med(seconds) / med(limits), med(seconds) / med(naives)
        print(f"ratio T_fanout/T_limit {ratio_limit:.2f}   T_fanout/T_naive {ratio_naive:.2f}")
        ratio_smtp = med(smtps) / med(limits)
        print(f"ratio T_smtp/T_limit {ratio_smtp:.2f}   T_fanout/T_smtp {med(seconds) / med(smtps):.2f}")
        last = (
            f"fanout_s={med(seconds):.2f} limit_s={med(limits):.2f} naive_s={med(naives):.2f} "
            f"smtp_s={med(smtps):.2f} "
            f"ratio_limit={ratio_limit:.1f} ratio_naive={ratio_naive:.2f} "
            f"peak_rss_mb={max(f.peak_rss_mb for f in fans):.0f} "
            f"process_peak_mb={max(f.process_peak_mb for f in fans):.0f}"
        )
    if plain:
        last += f" nolinks_s={med([f.seconds for f in plain]):.2f}"
    if scaled:
        per_address = med(seconds) / n / (med([f.seconds for f in scaled]) / len(real))
        peak, registry_peak = max(f.process_peak_mb for f in fans), max(f.process_peak_mb for f in scaled)
        print(
            f"against {len(real)} addresses: time per address {per_address:.2f} ×, largest process "
            f"{peak:.0f} MB against {registry_peak:.0f} MB"
        )
        last += f" per_address_ratio={per_address:.2f} registry_process_peak_mb={registry_peak:.0f}"
    if args.dkim:
        cost = signing_cost(args.dkim, keys / "dkim.pem")
        print(f"DKIM signing ({args.dkim}), one rendered alert mail: {cost:.0f} µs")
        last += f" dkim_sign_us={cost:.0f}"
    shutil.rmtree(keys, ignore_errors=True)
    print(last)


def report_overtaking(args: argparse.Namespace, rows: list[RegistryRow], port: int) -> None:
    n = len(rows)
    runs = [
        asyncio.run(overtaking(port, rows, args.database_url, args.mailers, args.head_start))
        for _ in range(args.runs)
    ]
    assert all(r.critical_sent == n and r.bulk_sent == n for r in runs), "not every delivery was sent"
    print(_header(n, args, "critical-overtakes"))
    print(
        f"a medium alert to every address; once {args.head_start:.0%} of it is sent, a critical one to every "
        "address (times from publishing the critical one)"
    )
    print(f"{'':<24} {'min':>9} {'median':>9} {'max':>9}")
    print(_row("critical alert created", [r.critical_created for r in runs], width=24))
    print(_row("critical dispatched", [r.critical_dispatched for r in runs], width=24))
    print(_row("critical first mail", [r.critical_first for r in runs], width=24))
    print(_row("critical all sent", [r.critical_all for r in runs], width=24))
    print(_row("medium all sent", [r.bulk_all for r in runs], width=24))
    print(_row("medium mails after it", [float(r.bulk_after_critical) for r in runs], "", width=24))
    med = statistics.median
    overtook = all(r.critical_all < r.bulk_all for r in runs)
    print(
        f"critical_first_s={med([r.critical_first for r in runs]):.3f} "
        f"critical_all_s={med([r.critical_all for r in runs]):.2f} "
        f"bulk_all_s={med([r.bulk_all for r in runs]):.2f} "
        f"bulk_after_critical={med([r.bulk_after_critical for r in runs]):.0f} "
        f"overtook={'yes' if overtook else 'no'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenario", choices=["fanout", "critical-overtakes", "throttled-relay"], default="fanout"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--addresses", type=int, default=None, help="a synthetic registry of N addresses")
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--mailers", type=int, default=None, help="mailer processes of ceptoar serve (default: one per core)"
    )
    parser.add_argument(
        "--no-references",
        dest="references",
        action="store_false",
        help="skip T_limit and T_naive (the naive loop alone takes about 3 ms per address)",
    )
    parser.add_argument(
        "--no-compare",
        dest="compare",
        action="store_false",
        help="skip the fan-out without answer links",
    )
    parser.add_argument(
        "--dkim",
        choices=["rsa-sha256", "ed25519-sha256"],
        default=None,
        help="fanout: sign every mail with a fresh key of this algorithm, and print the cost of signing",
    )
    parser.add_argument(
        "--head-start",
        type=float,
        default=0.25,
        help="critical-overtakes: the share of the first fan-out sent before the critical alert",
    )
    parser.add_argument(
        "--max-connections", type=int, default=4, help="throttled-relay: the relay's sessions at once"
    )
    parser.add_argument(
        "--rate", type=float, default=500, help="throttled-relay: the relay's messages a second"
    )
    parser.add_argument(
        "--nonadaptive-within",
        type=float,
        default=120,
        help="throttled-relay: seconds the run with adaptation off may take before it is stopped",
    )
    args = parser.parse_args()
    rows = registry(args.addresses)
    if args.scenario == "throttled-relay":
        report_throttled(args, rows)
        return
    ensure_postfix()
    sink = Sink()
    try:
        if args.scenario == "fanout":
            report_fanout(args, rows, sink)
        else:
            report_overtaking(args, rows, sink.port)
    finally:
        sink.stop()


if __name__ == "__main__":
    main()
