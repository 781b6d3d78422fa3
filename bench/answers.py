"""How fast organisations can answer an alert through their links when they all answer at once.

    python bench/answers.py [--clients 150] [--workers 1,2] [--database-url URL]

Makes a fresh PostgreSQL database (or uses the one named), loads the
shipped registry (1,788 organisations, 3,576 addresses), stores one alert
for every address as the dispatcher does and marks its deliveries sent.
Then, for each worker count, starts `ceptoar api --workers N` as its own
processes and, from this one, `--clients` clients at once each take the
next address's answer link and do what a person does: GET the page, POST
the answer, on one HTTP/1.1 connection of its own, as each organisation's
browser does. The requests are written by hand so that the clients' own
work stays small beside the server's.

It prints, per worker count, the GET+POST latency (median, 95th
percentile, largest) and answers per second, with the same server's
/healthz at the same concurrency as the reference, and checks in the
database that each answer was recorded once and each delivery kept its send
record. The last line: `p95_ms=… answers_per_s=…` for the largest worker
count.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import func, select  # noqa: E402

from bench.cluster import drop_database, new_database  # noqa: E402
from bench.fanout import free_port  # noqa: E402
from bench.portal import notice, sent_to_all  # noqa: E402
from ceptoar.bounces.links import AnswerLinks  # noqa: E402
from ceptoar.config import Settings  # noqa: E402
from ceptoar.registry import read_registry  # noqa: E402
from ceptoar.store import Store  # noqa: E402
from ceptoar.store.tables import answers, deliveries  # noqa: E402

# The answer link and the answer posted: the form a person submits.
ANSWER_FORM = b"answer=not_affected"


async def _prepare(url: str) -> tuple[str, list[int]]:
    """A new alert to every address, all sent; its id and its deliveries' ids."""
    store = await Store.open(url, upgrade=True)
    try:
        if not await store.subscribers.candidates():
            await store.subscribers.import_rows(read_registry(REPO / "subscribers" / "registry.csv"))
        return await sent_to_all(store, notice("ANSWERS", "critical"), "critical")
    finally:
        await store.close()


async def _check(url: str, alert_id: str) -> tuple[int, int, int]:
    """Answers recorded, deliveries acknowledged, and deliveries that lost their send record."""
    store = await Store.open(url)
    try:
        async with store.engine.connect() as conn:
            kept = (
                await conn.execute(select(func.count()).where(answers.c.alert_id == alert_id))
            ).scalar_one()
            mine = deliveries.c.alert_id == alert_id
            acked = (
                await conn.execute(select(func.count()).where(mine, deliveries.c.state == "acknowledged"))
            ).scalar_one()
            lost = (
                await conn.execute(
                    select(func.count()).where(
                        mine, (deliveries.c.sent_at.is_(None)) | (deliveries.c.last_code.is_(None))
                    )
                )
            ).scalar_one()
            return kept, acked, lost
    finally:
        await store.close()


class Connection:
    """One client's keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, f"127.0.0.1:{port}")

    async def request(self, method: str, path: str, body: bytes = b"") -> int:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if method == "POST":
            head += f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


@dataclass
class Round:
    latencies: list[float]
    seconds: float
    failures: int


async def _answer_all(port: int, paths: list[str], clients: int) -> Round:
    """Each link answered once, by `clients` at a time: GET then POST, timed together."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for path in paths:
        queue.put_nowait(path)
    latencies: list[float] = []
    failures = 0

    async def client() -> None:
        nonlocal failures
        while not queue.empty():
            path = queue.get_nowait()
            began = time.perf_counter()
            conn = await Connection.open(port)
            try:
                shown = await conn.request("GET", path)
                given = await conn.request("POST", path, ANSWER_FORM)
            finally:
                conn.close()
            latencies.append((time.perf_counter() - began) * 1000)
            failures += (shown, given) != (200, 200)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return Round(latencies, time.perf_counter() - began, failures)


async def _health(port: int, clients: int, each: int) -> list[float]:
    """/healthz at the same concurrency: what the server and this client cost without the store."""
    latencies: list[float] = []

    async def client() -> None:
        conn = await Connection.open(port)
        try:
            for _ in range(each):
                began = time.perf_counter()
                await conn.request("GET", "/healthz")
                latencies.append((time.perf_counter() - began) * 1000)
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)]


def _serve(workers: int, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "-m", "ceptoar", "api", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            asyncio.run(_health(port, workers * 2, 2))
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"ceptoar api --workers {workers} did not answer within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=150)
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, with commas")
    parser.add_argument(
        "--database-url", default=None, help="default: a new PostgreSQL database, dropped after"
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    made = None
    url = args.database_url
    if url is None:
        made, url = asyncio.run(new_database("answers"))
    print(f"{os.cpu_count()} cores; {args.clients} clients at once, each GET then POST of one answer link")
    print(
        f"{'workers':>7} {'answers':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'answers/s':>10}  "
        f"{'healthz p50':>11} {'healthz p95':>11}  recorded/acknowledged/lost"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="ceptoar-bench-answers-") as tmp:
            last = ""
            for workers in counts:
                port = free_port()
                base = f"http://127.0.0.1:{port}"
                settings = Settings(database_url=url, var_dir=Path(tmp), public_url=base)
                links = AnswerLinks.from_settings(settings)
                assert links is not None
                alert_id, ids = asyncio.run(_prepare(url))
                env = {
                    **os.environ,
                    "CEPTOAR_DATABASE_URL": url,
                    "CEPTOAR_VAR_DIR": tmp,
                    "CEPTOAR_PUBLIC_URL": base,
                    "CEPTOAR_LOG_LEVEL": "warning",
                    # Every client here is 127.0.0.1: the limit per client would measure itself.
                    "CEPTOAR_ANSWER_POSTS_PER_CLIENT": "1000000",
                }
                server = _serve(workers, port, env)
                try:
                    paths = [f"/answer/{links.token(i)}" for i in ids]
                    asyncio.run(_answer_all(port, paths[:300], args.clients))  # warm up: pools, templates
                    done = asyncio.run(_answer_all(port, paths[300:], args.clients))
                    health = asyncio.run(_health(port, args.clients, 20))
                finally:
                    server.terminate()
                    server.wait(60)
                kept, acked, lost = asyncio.run(_check(url, alert_id))
                rate = len(done.latencies) / done.seconds
                p50, p95 = statistics.median(done.latencies), _p95(done.latencies)
                print(
                    f"{workers:>7} {len(done.latencies):>8} {p50:8.0f} {p95:8.0f} {max(done.latencies):8.0f} "
                    f"{rate:10.0f}  {statistics.median(health):11.1f} {_p95(health):11.1f}  "
                    f"{kept}/{acked}/{lost}"
                    + (f"  ({done.failures} answers not 200)" if done.failures else "")
                )
                if kept != len(ids) or acked != len(ids) or lost:
                    print(
                        f"  expected {len(ids)} answers, {len(ids)} acknowledged, 0 without their send record"
                    )
                last = f"p95_ms={p95:.0f} answers_per_s={rate:.0f} workers={workers}"
            print(last)
    finally:
        if made is not None:
            asyncio.run(drop_database(made))


if __name__ == "__main__":
    main()
