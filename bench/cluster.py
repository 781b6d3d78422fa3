"""A fan-out on a three-node RabbitMQ cluster with a node killed in the middle: nothing lost, duplicates
bounded, the time to settle.

    python bench/cluster.py [--kill-at 0.3] [--runs 1]

Starts, on this machine and in a temporary directory:

- three RabbitMQ nodes of its own (ports 5681 to 5683), clustered; the
  service's queues are quorum queues, so each has a replica on every node;
- a TCP balancer in front of them, as a deployment puts one before a
  cluster: each new connection goes to the first node that accepts it;
- the built-in mailbox as the relay: it files every message, so a second
  copy of a mail would be seen;
- ceptoar as three hosts on a fresh PostgreSQL database: `serve --role
  dispatcher,sweeper,escalator` and two `serve --role mailer`.

The feed publishes examples/notice.json to the registry's 3,576 addresses
with `ceptoar.client.Publisher`. Once `--kill-at` of the mail is sent, the
node every connection goes through is killed (SIGKILL of its Erlang VM),
and a second notice is published at once, while the cluster fails over.
It prints what was sent and lost, the addresses that got a mail twice
against the deliveries in flight at the kill, the time to settle, the
longest pause in sending after the kill, and how long the second
notice's publish took; last line:
`settle_s=… sent=… total=… lost=… duplicates=… in_flight_at_kill=… pause_s=… publish_during_s=…`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402

from bench.fanout import free_port  # noqa: E402
from ceptoar.client import Publisher  # noqa: E402
from ceptoar.mailbox import list_messages  # noqa: E402
from ceptoar.mailbox.maildir import addresses  # noqa: E402
from ceptoar.store import Store  # noqa: E402

PG_ADMIN = os.environ.get("CEPTOAR_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
NODE_PORTS = (5681, 5682, 5683)


class Cluster:
    """Three RabbitMQ nodes of the bench's own, clustered, on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes = [f"ceptoar-bench-{i}@localhost" for i in range(1, 4)]
        for i, (node, port) in enumerate(zip(self.nodes, NODE_PORTS, strict=True)):
            home = root / f"node{i + 1}"
            home.mkdir(parents=True)
            (home / "rabbitmq.conf").write_text(
                f"listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n"
            )
            (home / "enabled_plugins").write_text("[].\n")
            (home / "env.conf").write_text("")
            subprocess.run(["rabbitmq-server", "-detached"], env=self._env(node, home, 25681 + i), check=True)
        for node in self.nodes:
            self._started(node)
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "reset")
            self.ctl(node, "join_cluster", self.nodes[0])
            self.ctl(node, "start_app")

    def _started(self, node: str, within: float = 120) -> None:
        """Wait for a node started with -detached: first to exist, then to finish booting."""
        deadline = time.monotonic() + within
        while True:
            try:
                self.ctl(node, "await_startup", timeout=within)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _env(self, node: str, home: Path, dist_port: int) -> dict[str, str]:
        if os.geteuid() == 0:
            for path in [home, *home.iterdir()]:
                shutil.chown(path, "rabbitmq", "rabbitmq")
        return {
            **os.environ,
            "RABBITMQ_NODENAME": node,
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(home / "env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(home / "log"),
            "RABBITMQ_PID_FILE": str(home / "pid"),
        }

    def ctl(self, node: str, *args: str, timeout: float = 60) -> str:
        done = subprocess.run(
            ["rabbitmqctl", "-n", node, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl -n {node} {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def connections(self, via: int) -> int:
        """Client connections the cluster lists, asked of node `via`."""
        listed = self.ctl(self.nodes[via], "list_connections", "pid", "-q")
        return sum(1 for line in listed.splitlines() if line.startswith("<"))

    def kill(self, index: int) -> None:
        """SIGKILL the node's Erlang VM: a host that died, not one that was stopped."""
        pid = int(self.ctl(self.nodes[index], "eval", "os:getpid().").strip().strip('"'))
        os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                self.ctl(node, "stop", timeout=60)


class Balancer:
    """A TCP balancer on a free port: each connection to the first node that accepts it, for its life."""

    def __init__(self, ports: tuple[int, ...]) -> None:
        self.ports = ports
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self._run, args=(started,), daemon=True).start()
        started.wait(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for port in self.ports:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        else:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


@dataclass
class Run:
    settle_s: float
    sent: int
    total: int
    lost: int
    duplicates: int
    in_flight_at_kill: int
    pause_s: float
    publish_during_s: float
    during_sent: int
    # Client connections the cluster had on the killed node before, and on the others once it settled.
    connections_before: int
    connections_after: int


@contextlib.contextmanager
def processes(commands: list[tuple[list[str], dict[str, str]]], log: Path) -> Iterator[None]:
    procs = []
    with log.open("ab") as out:
        for command, env in commands:
            procs.append(
                subprocess.Popen([sys.executable, "-m", "ceptoar", *command], env=env, stderr=out, stdout=out)
            )
        try:
            yield
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=120)


async def new_database(kind: str) -> tuple[str, str]:
    """A new PostgreSQL database for one bench run: its name and its URL."""
    name = f"ceptoar_{kind}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    return name, PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await admin.close()


def _ceptoar(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ceptoar", *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ceptoar {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


async def one_run(kill_at: float, *, kill: bool = True) -> Run:
    root = Path(tempfile.mkdtemp(prefix="ceptoar-cluster-"))
    os.chmod(root, 0o755)
    cluster = Cluster(root / "rabbitmq")
    balancer = Balancer(NODE_PORTS)
    name, db_url = await new_database("cluster")
    mailbox_port = free_port()
    env = {
        **os.environ,
        "CEPTOAR_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{balancer.port}/",
        "CEPTOAR_DATABASE_URL": db_url,
        "CEPTOAR_SMTP_URL": f"smtp://127.0.0.1:{mailbox_port}",
        "CEPTOAR_PREFIX": f"cluster{uuid.uuid4().hex[:6]}",
        "CEPTOAR_VAR_DIR": str(root / "var"),
        "CEPTOAR_LOG_FORMAT": "json",
        "CEPTOAR_SWEEP_SECONDS": "5",
    }
    try:
        _ceptoar("db", "upgrade", env=env)
        _ceptoar("subscribers", "import", str(REPO / "subscribers" / "registry.csv"), env=env)
        hosts = [
            (["mailbox", "serve", "--port", str(mailbox_port), "--dir", str(root / "mailbox")], env),
            (["serve", "--role", "dispatcher,sweeper,escalator", "--no-migrate"], env),
            (["serve", "--role", "mailer", "--mailers", "1", "--no-migrate"], env),
            (["serve", "--role", "mailer", "--mailers", "1", "--no-migrate"], env),
        ]
        with processes(hosts, root / "ceptoar.log"):
            return await _fan_out(cluster, env, root / "mailbox", kill_at, kill)
    finally:
        cluster.stop()
        await drop_database(name)
        shutil.rmtree(root, ignore_errors=True)


async def _fan_out(cluster: Cluster, env: dict[str, str], mailbox: Path, kill_at: float, kill: bool) -> Run:
    store = await Store.open(env["CEPTOAR_DATABASE_URL"])
    try:
        await asyncio.sleep(5)  # every host up and consuming
        with Publisher(env["CEPTOAR_AMQP_URL"], prefix=env["CEPTOAR_PREFIX"], attempts=20) as feed:
            began = time.monotonic()
            first = await asyncio.to_thread(feed.publish, (REPO / "examples" / "notice.json").read_bytes())
            alert = await _alert(store, first.id)
            total = 3576
            await _until_sent(store, alert, kill_at * total)
            in_flight = (await store.alerts.counts(alert)).get("sending", 0)
            before = cluster.connections(0)
            killed_at = datetime.now(UTC)
            if kill:
                cluster.kill(0)
            during_began = time.monotonic()
            second = await asyncio.to_thread(
                feed.publish, (REPO / "examples" / "notice-tokyo-outage.json").read_bytes()
            )
            publish_during = time.monotonic() - during_began
        counts = await _settled(store, alert)
        settle = time.monotonic() - began
        after = cluster.connections(1)
        during = await _settled(store, await _alert(store, second.id))
        rows = await store.deliveries.report(alert)
        times = sorted(r["sent_at"] for r in rows if r["sent_at"] and r["sent_at"] >= killed_at)
        pause = max((b - a).total_seconds() for a, b in zip([killed_at, *times], times, strict=False))
        # Each mail of the alert carries a Message-ID that starts with the alert's id.
        ours = f"<{alert}."
        copies = [
            sum(m.message_id.startswith(ours) for m in list_messages(mailbox, a)) for a in addresses(mailbox)
        ]
        twice = sum(1 for c in copies if c > 1)
        return Run(
            settle_s=settle,
            sent=counts.get("sent", 0),
            total=total,
            lost=total - counts.get("sent", 0),
            duplicates=twice,
            in_flight_at_kill=in_flight,
            pause_s=pause,
            publish_during_s=publish_during,
            during_sent=during.get("sent", 0),
            connections_before=before,
            connections_after=after,
        )
    finally:
        await store.close()


async def _until_sent(store: Store, alert_id: str, sent: float) -> None:
    """Poll the store until that many of the alert's deliveries are sent."""
    for _ in range(30000):
        if (await store.alerts.counts(alert_id)).get("sent", 0) >= sent:
            return
        await asyncio.sleep(0.02)
    raise RuntimeError(f"{alert_id}: {sent:.0f} deliveries not sent in 10 minutes")


async def _alert(store: Store, notice_id: str) -> str:
    for _ in range(3000):
        with contextlib.suppress(LookupError):
            return (await store.alerts.resolve(notice_id)).id
        await asyncio.sleep(0.02)
    raise RuntimeError(f"{notice_id} was never stored")


async def _settled(store: Store, alert_id: str, within: float = 600) -> dict[str, int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        counts = await store.alerts.counts(alert_id)
        if not any(counts.get(s, 0) for s in ("queued", "sending", "deferred")):
            return counts
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{alert_id} did not settle within {within}s: {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--kill-at", type=float, default=0.3, help="share of the mail sent when the node is killed"
    )
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--no-kill", dest="kill", action="store_false", help="the same run with no node killed, for reference"
    )
    args = parser.parse_args()
    runs = [asyncio.run(one_run(args.kill_at, kill=args.kill)) for _ in range(args.runs)]
    med = statistics.median
    what = (
        f"the node every connection used killed (SIGKILL) at {args.kill_at:.0%} of the mail"
        if args.kill
        else "no node killed"
    )
    print(
        "cluster: 3 RabbitMQ nodes, quorum queues; ceptoar as 3 hosts (dispatcher, 2 mailers) on PostgreSQL; "
        f"{what}; {len(runs)} run(s), {os.cpu_count()} cores, {datetime.now():%Y-%m-%d}"
    )
    for i, r in enumerate(runs, 1):
        print(
            f"run {i}: sent {r.sent} of {r.total}, lost {r.lost}; addresses mailed twice {r.duplicates} "
            f"(deliveries in flight at the kill: {r.in_flight_at_kill}); settled {r.settle_s:.2f} s after "
            f"publishing; longest pause in sending after the kill {r.pause_s:.2f} s; a notice published "
            f"during the failover confirmed in {r.publish_during_s:.2f} s, sent to {r.during_sent} "
            f"addresses; client connections {r.connections_before} before the kill, "
            f"{r.connections_after} after it, on the surviving nodes"
        )
    print(
        f"settle_s={med(r.settle_s for r in runs):.2f} sent={min(r.sent for r in runs)} "
        f"total={runs[0].total} lost={max(r.lost for r in runs)} "
        f"duplicates={max(r.duplicates for r in runs)} "
        f"in_flight_at_kill={max(r.in_flight_at_kill for r in runs)} "
        f"pause_s={med(r.pause_s for r in runs):.2f} "
        f"publish_during_s={med(r.publish_during_s for r in runs):.2f}"
    )

if __name__ == "__main__":
    main()
