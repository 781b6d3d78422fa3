"""The composer's preview is the dispatcher's plan: they agree on every sample notice and on a thread.

Each notice is previewed from the store, then published and dispatched by
a real dispatcher on the same store and broker; what was stored (severity,
rules, state, recipients, threading headers, deliveries a cancel stopped)
must be what the preview said. No mailer runs, so nothing moves between
the preview and the dispatch but what the test itself sends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import select

from ceptoar.compose.preview import preview
from ceptoar.dispatch import Dispatcher, load_rules
from ceptoar.dispatch.plan import Plan
from ceptoar.dispatch.rules import RuleSet
from ceptoar.feed.formats import parse_any
from ceptoar.model.alert import AlertView
from ceptoar.model.states import DeliveryState
from ceptoar.registry import RegistryRow
from ceptoar.store import Outcome
from ceptoar.store.engine import reading
from ceptoar.store.tables import alerts, deliveries
from tests.conftest import StackFactory
from tests.harness import REPO, MailboxServer, Stack, notice_doc, subset

SAMPLES = sorted(p for p in (REPO / "examples").iterdir() if p.suffix in (".json", ".xml"))


@asynccontextmanager
async def dispatching(stack: Stack, rules: RuleSet) -> AsyncIterator[None]:
    """A dispatcher consuming the stack's notices queue; no mailer."""
    stop = asyncio.Event()
    dispatcher = Dispatcher(store=stack.store, bus=stack.bus, settings=stack.settings, rules=rules)
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def _preview_then_dispatch(stack: Stack, rules: RuleSet, body: bytes) -> tuple[Plan, AlertView]:
    parsed = parse_any(body, None)
    planned = await preview(stack.store, rules, parsed.notice)
    await stack.bus.publish_notice(body, fmt=parsed.format, key=parsed.notice.key)
    for _ in range(600):
        alert = await stack.store.alerts.find(parsed.notice.source, parsed.notice.id)
        if alert is not None and alert.jobs_published_at is not None:
            return planned, alert
        await asyncio.sleep(0.05)
    raise AssertionError(f"{parsed.notice.id} was not dispatched")


async def _rows(stack: Stack, alert_id: str) -> dict[int, tuple[str, str | None]]:
    """Per address of the alert's deliveries: its state and the References it carries."""
    query = select(deliveries.c.address_id, deliveries.c.state, deliveries.c.references).where(
        deliveries.c.alert_id == alert_id
    )
    async with reading(stack.store.engine) as conn:
        return {a: (state, refs) for a, state, refs in (await conn.execute(query)).all()}


def _agrees(planned: Plan, alert: AlertView, rows: dict[int, tuple[str, str | None]]) -> None:
    assert alert.severity == planned.classification.severity.value
    assert alert.severity_rules == list(planned.classification.rules)
    assert alert.state == planned.lifecycle.state
    assert alert.held_reason == planned.lifecycle.held_reason
    assert alert.parent_id == planned.lifecycle.parent_id
    assert set(rows) == {c.address_id for c in planned.audience.recipients}
    threaded = {a: refs.split() for a, (_, refs) in rows.items() if refs}
    assert threaded == planned.threading


async def test_preview_and_dispatch_agree_on_every_sample_notice(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=registry_rows)
    rules = load_rules(stack.settings.rules)
    held = json.dumps(notice_doc(id="PLAN-RED", tlp="RED")).encode()
    exercise = json.dumps(notice_doc(id="PLAN-TEST", status="exercise", area=["13"])).encode()
    seen = set()
    async with dispatching(stack, rules):
        for body in [*(p.read_bytes() for p in SAMPLES), held, exercise]:
            planned, alert = await _preview_then_dispatch(stack, rules, body)
            _agrees(planned, alert, await _rows(stack, alert.id))
            seen.add((alert.severity, alert.state, len(planned.audience.recipients) > 0))
    # The samples are not all alike: several severities, a held one, and real audiences.
    assert len(SAMPLES) >= 5 and {p.suffix for p in SAMPLES} == {".json", ".xml"}
    assert len({severity for severity, _, _ in seen}) >= 3
    assert any(state == "held" for _, state, _ in seen)
    assert any(reached for _, _, reached in seen)


async def test_preview_and_dispatch_agree_on_an_update_and_a_cancel_of_a_thread(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    first, later = subset(registry_rows, 10), subset(registry_rows, 12)
    stack = await make_stack(mailbox=mailbox, rows=first)
    rules = load_rules(stack.settings.rules)
    async with dispatching(stack, rules):
        planned, original = await _preview_then_dispatch(
            stack, rules, json.dumps(notice_doc(id="THREAD-1")).encode()
        )
        _agrees(planned, original, await _rows(stack, original.id))

        # Half of the original is sent, as a mailer would have it; the rest stays queued.
        ids = sorted(await stack.store.alerts.queued_delivery_ids(original.id))[:10]
        claimed = await stack.store.deliveries.claim(ids, lease_seconds=60, max_attempts=6)
        await stack.store.deliveries.record(
            [Outcome(c.id, DeliveryState.SENT, c.attempt, 250, "2.0.0 Ok") for c in claimed]
        )
        await stack.store.subscribers.import_rows(later)  # new members for the update

        update_doc = notice_doc(id="THREAD-2", msg_type="update", references=["THREAD-1"])
        planned, update = await _preview_then_dispatch(stack, rules, json.dumps(update_doc).encode())
        rows = await _rows(stack, update.id)
        _agrees(planned, update, rows)
        assert len(planned.threading) == 10 and len(rows) == 24  # the mailed half threads; newcomers join

        # The cancel names the original while the update's deliveries are all still unsent.
        cancel_doc = notice_doc(id="THREAD-3", msg_type="cancel", references=["THREAD-1"])
        planned, cancel = await _preview_then_dispatch(stack, rules, json.dumps(cancel_doc).encode())
        _agrees(planned, cancel, await _rows(stack, cancel.id))
    async with reading(stack.store.engine) as conn:
        stopped = (
            await conn.execute(
                select(deliveries.c.id)
                .join(alerts, deliveries.c.alert_id == alerts.c.id)
                .where(alerts.c.thread_id == original.id, deliveries.c.state == DeliveryState.CANCELLED)
            )
        ).all()
    assert planned.cancels == original.id
    assert planned.unsent == len(stopped) == 10 + 24  # the whole thread's unsent mail, not one alert's
    assert len(planned.audience.recipients) == 10  # only the addresses that were mailed hear of it

