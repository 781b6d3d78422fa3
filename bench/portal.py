"""How fast the portal's pages answer for an alert with 3,576 deliveries, beside the same server's /healthz.

    python bench/portal.py [--requests 40] [--database-url URL]

Loads the shipped registry (1,788 organisations, 3,576 addresses) into a
fresh SQLite file (or the database named), stores one alert for every
address as the dispatcher does, marks its deliveries sent, a few failed
with the relay's reply, and records answers for 40 % of the organisations.
Then starts `ceptoar api` as its own process and, from this one, asks each
page `--requests` times in turn over loopback with a signed-in operator's
or local government's cookie:

- the operator's alert page (counts, 47 tiles, prefecture table, silent
  organisations, returned mail, escalations), its first live snapshot
  (server-sent events), the alerts list, the silent organisations' CSV;
- the local government's alert list and alert page;
- and, as the reference, `/healthz` of the same server.

It prints each page's median, 95th percentile and largest time in
milliseconds and, as its last line, `worst_p95_ms=… healthz_p95_ms=…`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from sqlalchemy import select, update  # noqa: E402

from bench.fanout import free_port  # noqa: E402
from ceptoar.api.portal.security import hashed, new_token  # noqa: E402
from ceptoar.feed import parse_notice  # noqa: E402
from ceptoar.model.answer import Answer  # noqa: E402
from ceptoar.registry import read_registry  # noqa: E402
from ceptoar.store import Actor, Store  # noqa: E402
from ceptoar.store.tables import deliveries  # noqa: E402

ANSWERED_SHARE = 0.4
FAILED = 25


def notice(bench: str, severity: str) -> str:
    """The benches' alert: a long Japanese advisory to every address, under a new id."""
    return json.dumps(
        {
            "schema": "ceptoar.notice/1",
            "source": "nisc",
            "id": f"BENCH-{bench}-{time.time_ns()}",
            "sent": datetime.now(UTC).isoformat(),
            "title": "VPN装置の脆弱性を悪用した攻撃について",
            "summary": "VPN装置の既知の脆弱性を悪用した侵入が複数の組織で確認されています。",
            "body": "対象の装置を使用している場合は、修正版への更新と侵害有無の確認を行ってください。\n" * 20,
            "category": "vulnerability",
            "severity": severity,
            "tlp": "CLEAR",
        },
        ensure_ascii=False,
    )


async def sent_to_all(store: Store, payload: str, severity: str) -> tuple[str, list[int]]:
    """The alert `payload` makes, stored for every address as the dispatcher does, every delivery then
    marked sent by the relay: its id and its deliveries' ids."""
    candidates = await store.subscribers.candidates()
    stored = await store.alerts.create(
        notice=parse_notice(payload),
        payload=payload,
        fmt="json",
        severity=severity,
        rules=[f"sender-{severity}"],
        audience=[c.address_id for c in candidates],
        message_id_domain="ceptoar.example",
    )
    now = datetime.now(UTC)
    mine = deliveries.c.alert_id == stored.alert_id
    async with store.engine.begin() as conn:
        await conn.execute(
            update(deliveries)
            .where(mine)
            .values(state="sent", attempts=1, sent_at=now, updated_at=now, last_code=250, last_reply="250 ok")
        )
        ids = (await conn.execute(select(deliveries.c.id).where(mine).order_by(deliveries.c.id))).scalars()
        return stored.alert_id, list(ids)


async def _prepare(url: str) -> tuple[str, str, str]:
    """The alert's id, an operator's session token and a local government's."""
    store = await Store.open(url)
    try:
        await store.subscribers.import_rows(read_registry(REPO / "subscribers" / "registry.csv"))
        candidates = await store.subscribers.candidates()
        alert_id, _ = await sent_to_all(store, notice("PORTAL", "high"), "high")
        now = datetime.now(UTC)
        async with store.engine.begin() as conn:
            failed = [c.address_id for c in candidates[-FAILED:]]
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.alert_id == alert_id, deliveries.c.address_id.in_(failed))
                .values(state="failed", last_code=550, last_reply="550 5.1.1 Recipient address rejected")
            )
        codes = sorted({c.code for c in candidates})
        for code in codes[: int(len(codes) * ANSWERED_SHARE)]:
            address = (await store.portal.addresses_of(code))[0]
            target = await store.portal.answer_target(code, alert_id, address.id)
            assert target is not None
            await store.answers.record(target, Answer.NOT_AFFECTED, via="portal", by=address.email)
        await store.portal.add_operator("bench", "not-a-usable-hash", who=Actor("bench"))
        operator, local = new_token(), new_token()
        until = now + timedelta(hours=2)
        await store.portal.start_session(hashed(operator), expires_at=until, operator="bench")
        first = await store.portal.address_by_email(candidates[0].email)
        assert first is not None
        await store.portal.start_session(hashed(local), expires_at=until, address_id=first.id)
        return alert_id, operator, local
    finally:
        await store.close()


async def _time(http: httpx.AsyncClient, path: str, *, stream: bool = False) -> float:
    began = time.perf_counter()
    if stream:
        async with http.stream("GET", path) as answer:
            assert answer.status_code == 200, (path, answer.status_code)
            async for line in answer.aiter_lines():
                if line.startswith("data: "):
                    break
    else:
        answer = await http.get(path)
        assert answer.status_code == 200, (path, answer.status_code)
    return (time.perf_counter() - began) * 1000


async def _measure(base: str, alert_id: str, operator: str, local: str, n: int) -> dict[str, list[float]]:
    pages = {
        "healthz (reference)": ("", "/healthz", False),
        "operator: alert page": ("ops", f"/ops/alerts/{alert_id}", False),
        "operator: live snapshot (SSE)": ("ops", f"/ops/alerts/{alert_id}/events", True),
        "operator: alerts list": ("ops", "/ops/alerts", False),
        "operator: silent CSV": ("ops", f"/ops/alerts/{alert_id}/organisations.csv", False),
        "local: alerts list": ("local", "/portal/alerts", False),
        "local: alert page": ("local", f"/portal/alerts/{alert_id}", False),
    }
    cookies = {"ops": {"ceptoar_ops": operator}, "local": {"ceptoar_portal": local}, "": {}}
    times: dict[str, list[float]] = {name: [] for name in pages}
    clients = {k: httpx.AsyncClient(base_url=base, cookies=v, timeout=30) for k, v in cookies.items()}
    try:
        for who, path, stream in pages.values():  # warm up: templates compiled, caches filled
            await _time(clients[who], path, stream=stream)
        for _ in range(n):
            for name, (who, path, stream) in pages.items():
                times[name].append(await _time(clients[who], path, stream=stream))
    finally:
        for client in clients.values():
            await client.aclose()
    return times


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ceptoar-bench-portal-") as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{tmp}/ceptoar.db"
        alert_id, operator, local = asyncio.run(_prepare(url))
        port = free_port()
        env = {
            **os.environ,
            "CEPTOAR_DATABASE_URL": url,
            "CEPTOAR_VAR_DIR": tmp,
            "CEPTOAR_LOG_LEVEL": "warning",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "ceptoar", "api", "--port", str(port)], env=env, stdout=subprocess.DEVNULL
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    httpx.get(f"{base}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            times = asyncio.run(_measure(base, alert_id, operator, local, args.requests))
        finally:
            server.terminate()
            server.wait(30)
    print(
        f"alert {alert_id}: 3,576 deliveries, {ANSWERED_SHARE:.0%} of organisations answered, {FAILED} failed"
    )
    print(f"{'page':<32} {'median':>8} {'p95':>8} {'max':>8}  (ms, {args.requests} requests each)")
    for name, values in times.items():
        print(f"{name:<32} {statistics.median(values):8.1f} {_p95(values):8.1f} {max(values):8.1f}")
    worst = max(_p95(v) for name, v in times.items() if not name.startswith("healthz"))
    print(f"worst_p95_ms={worst:.1f} healthz_p95_ms={_p95(times['healthz (reference)']):.1f}")


if __name__ == "__main__":
    main()
