"""Critical alerts first: their own job lane, and the next free SMTP connection.

The overtaking test runs the real stack (RabbitMQ, the mailbox as its own
process, SQLite); it asserts the order in which mail was accepted, never how
long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aio_pika

from ceptoar.bus import Lane, by_lane, job_delivery_ids, lane_for
from ceptoar.dispatch import Dispatcher, load_rules
from ceptoar.errors import TemporaryDeliveryError
from ceptoar.mail.pool import _Slots
from ceptoar.mailbox import count
from ceptoar.registry import RegistryRow
from ceptoar.retry import Retry, RetryPolicy
from ceptoar.store import Claimed
from tests.conftest import StackFactory
from tests.harness import REPO, MailboxServer, Stack, notice_doc, running, subset


def test_only_critical_alerts_take_the_critical_lane() -> None:
    assert lane_for("critical") is Lane.CRITICAL
    assert {lane_for(s) for s in ("high", "medium", "low")} == {Lane.BULK}
    assert by_lane([(1, "low"), (2, "critical"), (3, "high"), (4, "critical")]) == {
        Lane.BULK: [1, 3],
        Lane.CRITICAL: [2, 4],
    }


async def test_a_freed_slot_goes_to_an_urgent_waiter_before_earlier_bulk_ones() -> None:
    slots = _Slots(1, 0)
    assert await slots.acquire(urgent=False) is False
    order: list[str] = []

    async def take(name: str, urgent: bool) -> None:
        reserved = await slots.acquire(urgent=urgent)
        order.append(name)
        slots.release(reserved)

    waiting = [asyncio.create_task(take("bulk-1", False)), asyncio.create_task(take("bulk-2", False))]
    await asyncio.sleep(0)
    waiting.append(asyncio.create_task(take("urgent", True)))
    await asyncio.sleep(0)
    assert order == []
    slots.release(False)
    await asyncio.gather(*waiting)
    assert order == ["urgent", "bulk-1", "bulk-2"]


async def test_reserved_slots_serve_only_urgent_sends() -> None:
    slots = _Slots(1, 1)
    assert await slots.acquire(urgent=False) is False
    # The only general slot is taken: an urgent send gets the reserved one at once ...
    assert await asyncio.wait_for(slots.acquire(urgent=True), 1) is True
    # ... and a bulk send waits, even when the reserved one is given back.
    bulk = asyncio.create_task(slots.acquire(urgent=False))
    slots.release(True)
    await asyncio.sleep(0)
    assert not bulk.done()
    slots.release(False)
    assert await asyncio.wait_for(bulk, 1) is False


async def test_a_cancelled_waiter_does_not_swallow_the_slot() -> None:
    slots = _Slots(1, 0)
    await slots.acquire(urgent=False)
    gone = asyncio.create_task(slots.acquire(urgent=True))
    await asyncio.sleep(0)
    gone.cancel()
    later = asyncio.create_task(slots.acquire(urgent=False))
    await asyncio.sleep(0)
    slots.release(False)
    assert await asyncio.wait_for(later, 1) is False


async def test_critical_jobs_are_routed_to_the_critical_queue(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=[])
    await stack.bus.publish_lanes({Lane.CRITICAL: [7], Lane.BULK: [8, 9]})
    channel = await stack.bus._connection.channel()  # type: ignore[union-attr]
    got = {}
    for lane in Lane:
        queue = await channel.get_queue(stack.bus.names.jobs(lane))
        message = await queue.get(timeout=5, fail=True)
        assert isinstance(message, aio_pika.abc.AbstractIncomingMessage)
        got[lane] = job_delivery_ids(message.body)
        await message.ack()
    assert got == {Lane.CRITICAL: [7], Lane.BULK: [8, 9]}


async def test_a_deferred_critical_job_comes_back_on_the_critical_lane(
    make_stack: StackFactory, mailbox: MailboxServer
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=[])
    retry = RetryPolicy.from_settings(stack.settings).next_step(1, TemporaryDeliveryError("try later", code=451))
    assert isinstance(retry, Retry)
    await stack.bus.publish_retry(11, retry, lane=Lane.CRITICAL)
    channel = await stack.bus._connection.channel()  # type: ignore[union-attr]
    queue = await channel.get_queue(stack.bus.names.jobs(Lane.CRITICAL))
    for _ in range(100):
        message = await queue.get(fail=False)
        if message is not None:
            await message.ack()
            assert job_delivery_ids(message.body) == [11]
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the retried job never came back to the critical queue")
    bulk = await channel.get_queue(stack.bus.names.jobs(Lane.BULK))
    assert await bulk.get(fail=False) is None


async def test_a_critical_alert_overtakes_a_bulk_fanout_in_flight(
    make_stack: StackFactory, mailbox_process: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox_process, rows=registry_rows)
    bulk = notice_doc(id="BULK-1", severity="medium")
    critical = json.loads((REPO / "examples" / "notice.json").read_text(encoding="utf-8"))
    critical["area"] = ["13"]  # Tokyo: 126 addresses
    async with running(stack.settings):
        await stack.publish(bulk)
        bulk_alert = None
        while bulk_alert is None or (await stack.store.alerts.counts(bulk_alert.id)).get("sent", 0) < 300:
            await asyncio.sleep(0.05)
            try:
                bulk_alert = await stack.store.alerts.resolve("BULK-1")
            except LookupError:
                continue
        await stack.publish(critical)
        assert await stack.wait_settled(critical["id"]) == {"sent": 126}
        assert await stack.wait_settled("BULK-1") == {"sent": 3576}
    critical_alert = await stack.store.alerts.resolve(critical["id"])
    assert critical_alert.severity == "critical" and bulk_alert.severity == "medium"
    critical_sent = [r["sent_at"] for r in await stack.store.deliveries.report(critical_alert.id)]
    bulk_sent = sorted(r["sent_at"] for r in await stack.store.deliveries.report(bulk_alert.id))
    # Every critical mail was accepted while most of the bulk fan-out was still to go.
    still_to_go = [t for t in bulk_sent if t > max(critical_sent)]
    assert len(still_to_go) > 1000, f"only {len(still_to_go)} bulk mails were left"
    assert count(mailbox_process.root) == 3576 + 126


async def test_a_hand_off_that_never_sends_is_sent_once_its_lease_runs_out(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 3)
    stack = await make_stack(mailbox=mailbox, rows=rows, lease_seconds=1.0, critical_handoff=4)
    # The dispatcher claims the first four for its own mailer, and its process dies before sending them.
    dropped: list[Claimed] = []
    dispatcher = Dispatcher(
        store=stack.store, bus=stack.bus, settings=stack.settings, rules=load_rules(), hand_off=dropped.extend
    )
    stop = asyncio.Event()
    dispatching = asyncio.create_task(dispatcher.run(stop))
    await stack.publish(notice_doc(id="HANDOFF-1", severity="critical"))
    alert = None
    while alert is None or alert.jobs_published_at is None:
        await asyncio.sleep(0.05)
        with contextlib.suppress(LookupError):
            alert = await stack.store.alerts.resolve("HANDOFF-1")
    stop.set()
    await dispatching
    assert alert.severity == "critical" and len(dropped) == 4
    async with running(stack.settings):
        counts = await stack.wait_settled("HANDOFF-1", within=30)
    assert counts == {"sent": len(rows)}
    assert count(mailbox.root) == len(rows)
    for claimed in dropped:
        row = await stack.store.deliveries.get(claimed.id)
        assert row is not None and row["attempts"] == 2


async def _attempts(stack: Stack, ids: list[int]) -> set[int]:
    rows = [await stack.store.deliveries.get(i) for i in ids]
    return {r["attempts"] for r in rows if r is not None}


async def test_a_redelivered_notice_writes_what_its_dead_dispatcher_left_pending(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 3)
    # The sweeper waits a minute: what gets sent here, the redelivered notice sent.
    stack = await make_stack(mailbox=mailbox, rows=rows, sweep_seconds=60.0)
    doc = notice_doc(id="SPLIT-1", severity="critical")
    stored = await stack.store_alert(doc, published=False, severity="critical", claim=4)
    assert stored.pending and len(stored.claimed) == 4
    async with running(stack.settings):
        await stack.publish(doc)  # the broker redelivers the unacked notice
        deadline = time.monotonic() + 30
        while (counts := await stack.store.alerts.counts(stored.alert_id)).get("sent", 0) < len(rows) - 4:
            assert time.monotonic() < deadline, counts
            await asyncio.sleep(0.1)
    # The four claimed by the dead process wait for their lease to run out.
    assert counts == {"sent": len(rows) - 4, "sending": 4}
    assert count(mailbox.root) == len(rows) - 4
    alert = await stack.store.alerts.get(stored.alert_id)
    assert alert is not None and alert.jobs_published_at is not None


async def test_the_sweeper_writes_what_a_dead_dispatcher_left_pending(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 3)
    stack = await make_stack(mailbox=mailbox, rows=rows, lease_seconds=1.0)
    stored = await stack.store_alert(notice_doc(id="SPLIT-2"), published=False, severity="critical", claim=4)
    async with running(stack.settings):  # no notice comes again: only the sweeper knows
        counts = await stack.wait_settled("SPLIT-2", within=30)
    assert counts == {"sent": len(rows)}
    assert count(mailbox.root) == len(rows)
    alert = await stack.store.alerts.get(stored.alert_id)
    assert alert is not None and alert.jobs_published_at is not None
