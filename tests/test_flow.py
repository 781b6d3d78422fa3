"""The alert path end to end: RabbitMQ in, SMTP out, every delivery tracked.

Nothing here is mocked: the notices go through the running RabbitMQ on the
test's own prefix, mail goes to a real SMTP server, and the store is a real
SQLite file (or PostgreSQL database) of the test's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from sqlalchemy import select

from ceptoar.bus import Lane, Names
from ceptoar.mailbox import count, list_messages
from ceptoar.mailbox.maildir import addresses
from ceptoar.model.alert import AlertView
from ceptoar.registry import RegistryRow
from ceptoar.retry import RetryPolicy, restart_delay
from ceptoar.runtime import open_components
from ceptoar.service import sweep
from ceptoar.store.tables import deliveries
from tests.conftest import StackFactory
from tests.harness import (
    AMQP_URL,
    PG_ADMIN_DSN,
    REPO,
    MailboxServer,
    Stack,
    cli_env,
    notice_doc,
    run_cli,
    run_cli_async,
    running,
    subset,
)


async def test_full_fanout_reaches_every_address_exactly_once(
    make_stack: StackFactory, mailbox_process: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox_process, rows=registry_rows)
    sample = json.loads((REPO / "examples" / "notice.json").read_text(encoding="utf-8"))
    async with running(stack.settings):
        await stack.publish(sample)
        counts = await stack.wait_settled(sample["id"])
    assert counts == {"sent": 3576}
    per_address = {a: count(mailbox_process.root, a) for a in addresses(mailbox_process.root)}
    assert len(per_address) == 3576
    assert set(per_address.values()) == {1}
    assert set(per_address) == {r.email for r in registry_rows}

    # The operator's view agrees with the mailbox.
    env = cli_env(stack.settings)
    status = run_cli("status", sample["id"], "--json", env=env)
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["total"] == 3576 and doc["counts"]["sent"] == 3576
    assert doc["severity"] == "critical" and doc["rules"] == ["exploited-high-cvss", "cvss-critical"]
    box = run_cli("mailbox", "count", "--dir", str(mailbox_process.root), env=env)
    assert int(box.stdout) == doc["counts"]["sent"]


async def test_duplicate_notice_is_fanned_out_once(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 10))
    doc = notice_doc(id="DUP-1")
    async with running(stack.settings):
        await stack.publish(doc)
        await stack.wait_settled("DUP-1")
        await stack.publish(doc)
        await stack.publish(doc)
        marker = notice_doc(id="AFTER-DUP")  # processed after the duplicates: the queue is in order
        await stack.publish(marker)
        await stack.wait_settled("AFTER-DUP")
    alert = await stack.store.alerts.resolve("DUP-1")
    assert await stack.store.alerts.counts(alert.id) == {"sent": 20}
    subjects = Counter(e.subject for a in addresses(mailbox.root) for e in list_messages(mailbox.root, a))
    assert subjects == {"【注意】[TLP:CLEAR] 試験用の注意喚起": 40}  # 20 for DUP-1, 20 for the marker


async def test_malformed_notice_is_dead_lettered_and_the_next_one_goes_out(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 3))
    bad = notice_doc(id="BAD-1", cvss={"score": 12.5})
    async with running(stack.settings):
        await stack.publish(bad)
        await stack.publish(b"\x00 not json")
        await stack.publish(notice_doc(id="GOOD-1"))
        counts = await stack.wait_settled("GOOD-1")
        dead = [await stack.get_dead(), await stack.get_dead()]
    assert counts == {"sent": 6}
    headers = dead[0].headers or {}
    assert headers["x-ceptoar-field"] == "cvss.score"
    assert "cvss.score" in str(headers["x-ceptoar-reason"])
    assert "less than or equal to 10" in str(headers["x-ceptoar-reason"])
    assert json.loads(dead[0].body) == bad  # kept as it came
    assert "not valid JSON" in str((dead[1].headers or {})["x-ceptoar-reason"])
    with pytest.raises(LookupError):
        await stack.store.alerts.resolve("BAD-1")


async def test_unknown_area_code_is_dead_lettered_naming_the_entry(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 3))
    async with running(stack.settings):
        await stack.publish(notice_doc(id="AREA-1", area=["010006", "131016"]))  # Tokyo not loaded
        dead = await stack.get_dead()
    assert (dead.headers or {})["x-ceptoar-field"] == "area[1]"
    assert "131016 is not a subscribed local government" in str((dead.headers or {})["x-ceptoar-reason"])
    # The operator who published it asks after it: the refusal and its reason, not "no such notice".
    env = cli_env(stack.settings)
    for ident in ("AREA-1", "nisc:AREA-1"):
        status = await run_cli_async("status", ident, env=env)
        assert status.returncode == 1
        assert "the notice was refused at" in status.stderr and "(field area[1])" in status.stderr
        assert "131016 is not a subscribed local government" in status.stderr
    listed = await run_cli_async("alerts", "--rejected", env=env)
    assert listed.returncode == 0 and "nisc:AREA-1 [area[1]]" in listed.stdout
    unknown = await run_cli_async("status", "NEVER-SENT", env=env)
    assert unknown.returncode == 1 and "no alert or notice with id 'NEVER-SENT'" in unknown.stderr


async def test_451_then_250_ends_sent_after_a_deferred_event(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 2)
    busy = rows[0].email
    mailbox.handler.script[busy] = ["451 4.7.1 Greylisted, try again later"]  # type: ignore[union-attr]
    stack = await make_stack(mailbox=mailbox, rows=rows)
    async with running(stack.settings):
        await stack.publish(notice_doc(id="GREY-1"))
        counts = await stack.wait_settled("GREY-1")
    assert counts == {"sent": 4}
    alert = await stack.store.alerts.resolve("GREY-1")
    row = await stack.store.deliveries.find(alert.id, busy)
    assert row is not None and row["attempts"] == 2
    events = await stack.store.deliveries.events(row["id"])
    assert [(e["state"], e["smtp_code"]) for e in events] == [
        ("queued", None),
        ("sending", None),
        ("deferred", 451),
        ("sending", None),
        ("sent", 250),
    ]
    assert events[2]["smtp_reply"] == "4.7.1 Greylisted, try again later"
    assert count(mailbox.root, busy) == 1


async def test_550_ends_failed_with_the_reply_kept(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 2)
    gone = rows[1].email
    mailbox.handler.script[gone] = [f"550 5.1.1 <{gone}>: Recipient address rejected"]  # type: ignore[union-attr]
    stack = await make_stack(mailbox=mailbox, rows=rows)
    async with running(stack.settings):
        await stack.publish(notice_doc(id="GONE-1"))
        counts = await stack.wait_settled("GONE-1")
    assert counts == {"sent": 3, "failed": 1}
    alert = await stack.store.alerts.resolve("GONE-1")
    row = await stack.store.deliveries.find(alert.id, gone)
    assert row is not None
    assert (row["state"], row["attempts"], row["last_code"]) == ("failed", 1, 550)
    assert row["last_reply"] == f"5.1.1 <{gone}>: Recipient address rejected"
    assert count(mailbox.root, gone) == 0


async def test_temporary_failures_that_never_clear_end_failed(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 1)
    stuck = rows[0].email
    mailbox.handler.script[stuck] = ["452 4.2.2 Mailbox full"] * 10  # type: ignore[union-attr]
    stack = await make_stack(mailbox=mailbox, rows=rows)
    async with running(stack.settings):
        await stack.publish(notice_doc(id="FULL-1"))
        counts = await stack.wait_settled("FULL-1")
    assert counts == {"sent": 1, "failed": 1}
    alert = await stack.store.alerts.resolve("FULL-1")
    row = await stack.store.deliveries.find(alert.id, stuck)
    assert row is not None
    assert row["attempts"] == RetryPolicy.from_settings(stack.settings).max_attempts == 3
    assert row["last_code"] == 452
    assert row["last_reply"] == "4.2.2 Mailbox full (attempts exhausted: 3)"


async def test_job_published_twice_sends_once(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 20))
    stored = await stack.store_alert(notice_doc(id="TWICE-1"), published=True)
    # Every job three times, interleaved, before any mailer runs.
    await stack.bus.publish_jobs(stored.delivery_ids * 3)
    async with running(stack.settings):
        counts = await stack.wait_settled(stored.alert_id)
    assert counts == {"sent": 40}
    assert count(mailbox.root) == 40
    assert {count(mailbox.root, a) for a in addresses(mailbox.root)} == {1}
    for delivery_id in stored.delivery_ids[:5]:
        states = [e["state"] for e in await stack.store.deliveries.events(delivery_id)]
        assert states == ["queued", "sending", "sent"]


async def test_redelivered_notice_publishes_jobs_that_were_never_confirmed(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    """A dispatcher that died between storing the alert and publishing its jobs loses nothing."""
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 4))
    doc = notice_doc(id="CRASH-1")
    await stack.store_alert(doc, published=False)
    async with running(stack.settings):
        await stack.publish(doc)  # the broker redelivers the unacked notice
        counts = await stack.wait_settled("CRASH-1")
    assert counts == {"sent": 8}
    assert count(mailbox.root) == 8


async def test_sweep_resends_a_delivery_whose_worker_died(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1), lease_seconds=0.2)
    stored = await stack.store_alert(notice_doc(id="LEASE-1"), published=True)
    # A worker claimed both deliveries, then died: no job is left in the queue.
    await stack.store.deliveries.claim(stored.delivery_ids, lease_seconds=0.2, max_attempts=3)
    async with running(stack.settings):
        counts = await stack.wait_settled("LEASE-1", within=30)
    assert counts == {"sent": 2}
    first = await stack.store.deliveries.get(stored.delivery_ids[0])
    assert first is not None and first["attempts"] == 2
    (mail,) = list_messages(mailbox.root, first["email"])
    assert mail.message_id == first["message_id"]


@pytest.mark.postgres
async def test_fanout_on_postgresql(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], pg_url: str
) -> None:
    tokyo = [r for r in registry_rows if r.code.startswith("13")]
    stack = await make_stack(mailbox=mailbox, rows=tokyo, database_url=pg_url)
    async with running(stack.settings):
        await stack.publish(notice_doc(id="PG-1", area=["13"]))
        counts = await stack.wait_settled("PG-1")
    assert counts == {"sent": 126}
    assert count(mailbox.root) == 126
    assert stack.store.engine.dialect.name == "postgresql"  # it ran on PostgreSQL, not the default SQLite
    alert = await stack.store.alerts.resolve("PG-1")
    assert alert.jobs_published_at is not None


async def test_open_components_declares_the_topology(
    make_settings: object, registry_rows: list[RegistryRow], tmp_path: Path
) -> None:
    from contextlib import AsyncExitStack

    settings = make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 's.db'}")  # type: ignore[operator]
    async with AsyncExitStack() as stack:
        c = await open_components(settings, stack, name="t")
        assert await sweep(c) == 0
    names = Names(settings.prefix)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for queue in names.queues(settings.retry_delays):  # passive: fails unless it was declared
            declared = await channel.declare_queue(queue, passive=True)
            assert declared.declaration_result.message_count == 0, queue
        for exchange in names.exchanges:
            await channel.declare_exchange(exchange, passive=True)
    assert len(names.queues(settings.retry_delays)) == 4 + 2 * len(set(settings.retry_delays))


async def _set_database_reachable(url: str, reachable: bool) -> None:
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(reachable).lower()}')
        if not reachable:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_database_outage_is_waited_out_without_losing_or_doubling(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], pg_url: str
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 30), database_url=pg_url)
    try:
        async with running(stack.settings):
            await _set_database_reachable(pg_url, False)
            await stack.publish(notice_doc(id="OUTAGE-1"))
            await asyncio.sleep(3)
            await _set_database_reachable(pg_url, True)
            counts = await stack.wait_settled("OUTAGE-1", within=60)
    finally:
        await _set_database_reachable(pg_url, True)
    assert counts == {"sent": 60}
    assert {count(mailbox.root, a) for a in addresses(mailbox.root)} == {1}
    assert len(addresses(mailbox.root)) == 60
    with pytest.raises(AssertionError, match="nothing was dead-lettered"):
        await stack.get_dead(within=1)


async def test_a_cap_identifier_reused_with_another_sent_time_is_refused(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    """CAP keys a message by sender, identifier and sent: a clash is a sender's error, not a duplicate."""
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 2))
    cap = (REPO / "tests" / "data" / "cap" / "hsas-alert.xml").read_bytes()
    async with running(stack.settings):
        await stack.publish(cap, fmt="cap")
        await stack.wait_settled("hsas@dhs.gov:43b080713727")
        await stack.publish(
            cap.replace(b"2003-04-02T14:39:01-05:00", b"2003-04-02T15:00:00-05:00"),
            fmt="cap",
        )
        dead = await stack.get_dead()
    assert (dead.headers or {})["x-ceptoar-field"] == "id"
    assert "hsas@dhs.gov already used id 43b080713727 with sent 2003-04-02T19:39:01+00:00" in str(
        (dead.headers or {})["x-ceptoar-reason"]
    )


async def test_a_delivery_whose_job_was_lost_is_sent_by_the_sweeper(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    """A job dead-lettered after repeated failures leaves its delivery queued; the sweeper sends it."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from ceptoar.store.tables import deliveries

    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1), lease_seconds=1.0)
    stored = await stack.store_alert(notice_doc(id="LOST-1"), published=True)  # no job was ever queued
    async with stack.store.engine.begin() as conn:
        await conn.execute(update(deliveries).values(updated_at=datetime.now(UTC) - timedelta(seconds=5)))
    async with running(stack.settings):
        counts = await stack.wait_settled("LOST-1", within=30)
    assert counts == {"sent": 2}
    assert count(mailbox.root) == 2
    assert [e["state"] for e in await stack.store.deliveries.events(stored.delivery_ids[0])] == [
        "queued",
        "sending",
        "sent",
    ]


@pytest.mark.postgres
async def test_three_mailer_processes_on_postgresql_send_each_address_once(
    make_stack: StackFactory,
    mailbox_process: MailboxServer,
    registry_rows: list[RegistryRow],
    pg_url: str,
) -> None:
    stack = await make_stack(mailbox=mailbox_process, rows=registry_rows, database_url=pg_url)
    env = {**os.environ, **cli_env(stack.settings), "CEPTOAR_LOG_LEVEL": "debug"}
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ceptoar", "serve", "--mailers", "3", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert serve.stderr is not None
    events: list[dict[str, object]] = []

    async def read_log() -> None:
        assert serve.stderr is not None
        async for line in serve.stderr:
            events.append(json.loads(line))

    reader = asyncio.create_task(read_log())
    try:
        for _ in range(600):
            if any(e["event"] == "service.started" for e in events):
                break
            assert serve.returncode is None, events
            await asyncio.sleep(0.05)
        sample = json.loads((REPO / "examples" / "notice.json").read_text(encoding="utf-8"))
        await stack.publish(sample)
        # Every job twice more, so the processes race to claim the same deliveries.
        alert = await _alert_when_stored(stack, sample["id"])
        ids = [d["id"] for d in await _deliveries(stack, alert.id)]
        for _ in range(2):
            await stack.bus.publish_jobs(ids, lane=Lane.CRITICAL)
        assert await stack.wait_settled(sample["id"]) == {"sent": 3576}
    finally:
        serve.terminate()
        assert await asyncio.wait_for(serve.wait(), 60) == 0
        await reader
    per_address = {a: count(mailbox_process.root, a) for a in addresses(mailbox_process.root)}
    assert len(per_address) == 3576 and set(per_address.values()) == {1}
    # Every process took its share of the queue.
    sent_by: Counter[object] = Counter()
    for e in events:
        if e["event"] == "mailer.batch":
            sent_by[e["pid"]] += e["sent"]  # type: ignore[operator]
    assert sum(sent_by.values()) == 3576
    assert len(sent_by) == 3, sent_by
    assert {r["attempts"] for r in await stack.store.deliveries.report(alert.id)} == {1}


async def _alert_when_stored(stack: Stack, ident: str) -> AlertView:
    for _ in range(1000):
        try:
            return await stack.store.alerts.resolve(ident)
        except LookupError:
            await asyncio.sleep(0.01)
    raise AssertionError(f"{ident} was never stored")


async def _deliveries(stack: Stack, alert_id: str) -> list[dict[str, Any]]:
    async with stack.store.engine.connect() as conn:
        rows = await conn.execute(select(deliveries.c.id).where(deliveries.c.alert_id == alert_id))
        return [dict(r) for r in rows.mappings()]


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for its new parent to reap it has exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_mailer_processes_stop_when_serve_is_killed_outright(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1))
    env = {**os.environ, **cli_env(stack.settings)}
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ceptoar", "serve", "--mailers", "3", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert serve.stderr is not None
    async for line in serve.stderr:
        if json.loads(line)["event"] == "service.started":
            break
    children = _children(serve.pid)
    assert len(children) == 2 and all(_alive(p) for p in children)
    serve.kill()  # SIGKILL: no chance to stop its children
    await serve.wait()
    for _ in range(200):
        if not any(_alive(p) for p in children):
            break
        await asyncio.sleep(0.1)
    assert not any(_alive(p) for p in children), "a mailer process outlived ceptoar serve"


def test_a_mailer_process_that_keeps_dying_is_restarted_ever_less_often() -> None:
    delays = [restart_delay(0.0, 0.5)]
    for _ in range(8):
        delays.append(restart_delay(delays[-1], 0.5))
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    # One that ran for a minute is started again at the first delay.
    assert restart_delay(60.0, 61.0) == 1.0


async def test_a_notice_in_the_operators_name_that_no_audit_entry_records_is_dead_lettered(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    """Whoever may publish to the feed exchange cannot speak as the operators: their notices are audited first."""
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 2))
    forged = notice_doc(id="OP-20261202-000000-dead", source="operator", severity_override="critical")
    async with running(stack.settings):
        await stack.publish(forged)
        dead = await stack.get_dead()
        await stack.publish(notice_doc(id="AFTER-FORGED"))
        await stack.wait_settled("AFTER-FORGED")
    headers = dead.headers or {}
    assert headers["x-ceptoar-field"] == "source"
    assert "no operator's action in the audit log published notice OP-20261202-000000-dead" in str(
        headers["x-ceptoar-reason"]
    )
    with pytest.raises(LookupError):
        await stack.store.alerts.resolve("OP-20261202-000000-dead")
    assert count(mailbox.root) == 4  # only AFTER-FORGED


def _libfaketime() -> str:
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    assert found, "libfaketime is missing: scripts/tools installs it (apt-get install faketime)"
    return str(found[0])


async def test_the_demo_notice_goes_out_ten_years_from_now(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    """The README's first command publishes examples/notice.json: it must work whenever a newcomer runs it."""
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 2))
    later = {**os.environ, **cli_env(stack.settings), "LD_PRELOAD": _libfaketime(), "FAKETIME": "+3650d"}
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ceptoar", "serve", "--mailers", "1", env=later, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        published = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ceptoar", "publish", str(REPO / "examples" / "notice.json"),
            env=later, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await published.communicate()
        assert published.returncode == 0, err.decode()
        assert await stack.wait_settled(out.decode().strip()) == {"sent": 4}
        alert = await stack.store.alerts.resolve("NISC-2026-1128-001")
        assert alert.created_at.year >= datetime.now(UTC).year + 9  # it did run ten years ahead
    finally:
        serve.terminate()
        assert await asyncio.wait_for(serve.wait(), 60) == 0
