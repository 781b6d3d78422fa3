"""Fan-out speed beside the physical limit and a naive loop, in one run.

    python bench/fanout.py [--runs 3] [--addresses N] [--database-url URL] [--mailers N]
    python bench/fanout.py --scenario critical-overtakes

Starts what it needs: Postfix's smtp-sink as the relay (installs postfix
when missing), `ceptoar serve` as its own process on a fresh name prefix
with a fresh SQLite file (or --database-url), and RabbitMQ on this machine.
It then measures:

- T_fanout: from publishing one notice to every one of its deliveries being
  `sent`, with the first mail's latency, messages per second, and the
  service's peak memory (VmHWM);
- T_limit: Postfix's smtp-source, 4 sessions, the same number of 4 KB
  messages, into the same sink;
- T_naive: one smtplib connection, one EmailMessage with a Japanese subject
  built per message.

It prints min/median/max over the runs and, as its last line, the medians:
`fanout_s=… limit_s=… naive_s=… ratio_limit=… ratio_naive=… peak_rss_mb=…`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ceptoar.bus import Bus, delete_topology  # noqa: E402
from ceptoar.config import Settings  # noqa: E402
from ceptoar.registry import RegistryRow, read_registry  # noqa: E402
from ceptoar.store import Store  # noqa: E402

AMQP_URL = os.environ.get("CEPTOAR_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
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


class Sink:
    """Postfix's smtp-sink on a free loopback port: accepts and discards."""

    def __init__(self) -> None:
        self.port = free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(["smtp-sink", *user, f"127.0.0.1:{self.port}", "1000"])
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("smtp-sink did not start")

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
    sent: int


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

    def peak_rss_mb(self) -> float:
        """The sum of each process's peak resident memory (VmHWM): an upper bound of the service's peak."""
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        return total / 1024

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


async def _until_all_sent(store: Store, alert_id: str, total: int, within: float = 900) -> int:
    """Poll the store, as an operator's status would, until every delivery is sent."""
    for _ in range(int(within / 0.02)):
        sent = (await store.alerts.counts(alert_id)).get("sent", 0)
        if sent >= total:
            return sent
        await asyncio.sleep(0.02)
    raise RuntimeError(f"not every delivery was sent within {within}s")


async def fanout(port: int, rows: list[RegistryRow], database_url: str | None, mailers: int | None) -> Fanout:
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
    store = await Store.open(db_url)
    await store.subscribers.import_rows(rows, replace=True)
    service = Service(env, mailers)
    bus = Bus(AMQP_URL, prefix=prefix, retry_delays=[10])
    await bus.connect(name="bench")
    try:
        doc = json.loads((REPO / "examples" / "notice.json").read_text(encoding="utf-8"))
        doc["id"] = f"BENCH-{uuid.uuid4().hex[:8]}"
        doc["sent"] = datetime.now(UTC).isoformat()
        wall0 = datetime.now(UTC)
        start = time.perf_counter()
        await bus.publish_notice(
            json.dumps(doc, ensure_ascii=False).encode(), content_type="application/json"
        )
        alert = None
        while alert is None:
            try:
                alert = await store.alerts.resolve(doc["id"])
            except LookupError:
                await asyncio.sleep(0.005)
        sent = await _until_all_sent(store, alert.id, len(rows))
        seconds = time.perf_counter() - start
        first = min(r["sent_at"] for r in await store.deliveries.report(alert.id) if r["sent_at"])
        view = await store.alerts.get(alert.id)
        assert view is not None and view.jobs_published_at is not None
        return Fanout(
            seconds,
            (view.created_at - wall0).total_seconds(),
            (view.jobs_published_at - wall0).total_seconds(),
            (first - wall0).total_seconds(),
            service.peak_rss_mb(),
            sent,
        )
    finally:
        service.stop()
        await bus.close()
        await store.close()
        await _drop_topology(prefix)
        shutil.rmtree(work, ignore_errors=True)


async def _drop_topology(prefix: str) -> None:
    # Every queue the service declared: its retry delays are the configured ones.
    await delete_topology(AMQP_URL, prefix=prefix, retry_delays=Settings().retry_delays)


def _row(name: str, values: list[float], unit: str = "s") -> str:
    return f"{name:<18} {min(values):>9.3f} {statistics.median(values):>9.3f} {max(values):>9.3f} {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--addresses", type=int, default=None, help="a synthetic registry of N addresses")
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--mailers", type=int, default=None, help="mailer processes of ceptoar serve (default: one per core)"
    )
    args = parser.parse_args()
    ensure_postfix()
    rows = registry(args.addresses)
    n = len(rows)
    sink = Sink()
    try:
        fans, limits, naives = [], [], []
        for _ in range(args.runs):
            fans.append(asyncio.run(fanout(sink.port, rows, args.database_url, args.mailers)))
            limits.append(t_limit(sink.port, n))
            naives.append(t_naive(sink.port, n))
    finally:
        sink.stop()
    assert all(f.sent == n for f in fans), "not every delivery was sent"
    seconds = [f.seconds for f in fans]
    print(
        f"{n} addresses, {args.runs} runs, {os.cpu_count()} cores, mailers={args.mailers or os.cpu_count()}, "
        f"store={'PostgreSQL' if args.database_url else 'SQLite'}, {datetime.now():%Y-%m-%d}"
    )
    print(f"{'':<18} {'min':>9} {'median':>9} {'max':>9}")
    print(_row("T_fanout", seconds))
    print(_row("  alert created", [f.stored for f in fans]))
    print(_row("  dispatched", [f.dispatch for f in fans]))
    print(_row("  first mail", [f.first_mail for f in fans]))
    print(_row("  messages/s", [n / s for s in seconds], "/s"))
    print(_row("  per address", [s / n * 1e6 for s in seconds], "µs"))
    print(_row("  peak RSS", [f.peak_rss_mb for f in fans], "MB"))
    print(_row("T_limit", limits))
    print(_row("T_naive", naives))
    med = statistics.median
    ratio_limit, ratio_naive = med(seconds) / med(limits), med(seconds) / med(naives)
    print(f"ratio T_fanout/T_limit {ratio_limit:.2f}   T_fanout/T_naive {ratio_naive:.2f}")
    print(
        f"fanout_s={med(seconds):.2f} limit_s={med(limits):.2f} naive_s={med(naives):.2f} "
        f"ratio_limit={med(seconds) / med(limits):.1f} ratio_naive={med(seconds) / med(naives):.2f} "
        f"peak_rss_mb={max(f.peak_rss_mb for f in fans):.0f}"
    )


if __name__ == "__main__":
    main()
