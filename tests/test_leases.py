"""Claims that follow their holder, and the one rule for answers and sends.

The store tests run on SQLite and PostgreSQL: a live holder's renewals
keep its claims past the lease, a dead holder of this host loses them at
once, and an answer that arrives while its delivery is being sent is
applied with the send's outcome, never instead of it. Each allowed move of
the state machine is checked against the table in the model.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from ceptoar.model.answer import Answer
from ceptoar.model.states import TRANSITIONS, DeliveryState, allowed, sources
from ceptoar.registry import RegistryRow
from ceptoar.store import Outcome, ReturnedMail
from ceptoar.store.leases import Holder, this_process
from ceptoar.store.tables import deliveries
from tests.conftest import StackFactory
from tests.harness import MailboxServer, Stack, notice_doc, subset

S = DeliveryState


def test_every_state_has_its_moves_and_cancelled_is_final() -> None:
    assert set(TRANSITIONS) == set(DeliveryState)
    assert TRANSITIONS[S.CANCELLED] == frozenset()
    # Nothing goes back to being unsent but through `queued` (an operator's resend, a refund).
    for source, targets in TRANSITIONS.items():
        assert S.QUEUED not in targets or source is not S.QUEUED
    assert sources(S.ACKNOWLEDGED) == (S.SENDING, S.SENT)
    assert sources(S.BOUNCED) == (S.SENT, S.DEFERRED)
    assert not allowed(S.BOUNCED, S.ACKNOWLEDGED)
    assert not allowed(S.QUEUED, S.SENT), "a mail is claimed before it is sent"


def test_a_holder_is_read_back_from_its_claim_and_a_wrong_start_time_is_not_alive() -> None:
    me = this_process()
    assert Holder.parse(str(me)) == me and me.pid == os.getpid() and me.alive()
    assert Holder.parse("host-a.example/12/34") == Holder("host-a.example", 12, 34)
    assert Holder.parse("no-pid") is None and Holder.parse("h/x/1") is None
    assert not Holder(me.host, me.pid, me.started + 1).alive(), "a pid given to another process since"


async def _claimed(stack: Stack, ident: str, *, lease: float) -> list[int]:
    stored = await stack.store_alert(notice_doc(id=ident), published=True)
    ids = await stack.store.alerts.queued_delivery_ids(stored.alert_id)
    claimed = await stack.store.deliveries.claim(ids, lease_seconds=lease, max_attempts=5)
    assert [c.id for c in claimed] == ids
    return ids


async def test_a_live_holders_renewals_keep_its_claims_and_a_dead_ones_go_back_at_once(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], db_url: str
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 2), database_url=db_url)
    mine = await _claimed(stack, "LEASE-1", lease=1.0)
    theirs = (await _claimed(stack, "LEASE-2", lease=60.0))[:2]
    me = this_process()
    dead = Holder(me.host, me.pid, me.started + 1)  # this pid, but not the process that claimed
    elsewhere = Holder("host-b.example", me.pid, me.started + 1)  # not this host's to judge
    async with stack.store.engine.begin() as conn:
        await conn.execute(update(deliveries).where(deliveries.c.id == theirs[0]).values(holder=str(dead)))
        await conn.execute(update(deliveries).where(deliveries.c.id == theirs[1]).values(holder=str(elsewhere)))

    assert await stack.store.leases.renew(mine, lease_seconds=60.0) == len(mine)
    assert await stack.store.leases.renew(theirs, lease_seconds=60.0) == 0, "only the holder renews"
    await asyncio.sleep(1.2)
    assert await stack.store.deliveries.expired_leases() == [], "renewed past the one-second lease"

    assert await stack.store.leases.lapse_dead_holders() == {str(dead): 1}
    assert [i for i, _ in await stack.store.deliveries.expired_leases()] == [theirs[0]]
    # Another worker now claims it: the same row, one more attempt, this process its holder.
    (again,) = await stack.store.deliveries.claim([theirs[0]], lease_seconds=60.0, max_attempts=5)
    assert again.attempt == 2
    async with stack.store.engine.connect() as conn:
        holder = (await conn.execute(select(deliveries.c.holder).where(deliveries.c.id == theirs[0]))).scalar()
    assert holder == str(me)


async def test_an_answer_during_the_send_is_counted_at_once_and_the_send_is_kept(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], db_url: str
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 2), database_url=db_url)
    answered, quiet = (await _claimed(stack, "RACE-1", lease=60.0))[:2]
    target = await stack.store.answers.target(answered)
    assert target is not None and target.state == S.SENDING
    done = await stack.store.answers.record(target, Answer.RECEIVED, via="link")
    assert not done.acknowledged, "the row is the send's until its outcome is written"
    assert await stack.store.answers.latest(target.alert_id) == {target.subscriber_code: "received"}

    at = datetime.now(UTC)
    outcomes = [Outcome(i, S.SENT, 1, 250, f"2.0.0 Ok: queued as {i}", at) for i in (answered, quiet)]
    assert len(await stack.store.deliveries.record(outcomes)) == 2
    row = await stack.store.deliveries.get(answered)
    assert row is not None
    assert (row["state"], row["last_code"], row["last_reply"]) == ("acknowledged", 250, f"2.0.0 Ok: queued as {answered}")
    assert row["sent_at"] is not None and abs(row["sent_at"] - at) < timedelta(seconds=1)
    events = [(e["state"], e["smtp_code"]) for e in await stack.store.deliveries.events(answered)]
    assert events == [("queued", None), ("sending", None), ("sent", 250), ("acknowledged", None)]
    other = await stack.store.deliveries.get(quiet)
    assert other is not None and other["state"] == "sent", "an answer belongs to its own delivery's row"
    # Each move the race made is one the table allows.
    assert allowed(S.SENDING, S.ACKNOWLEDGED) and allowed(S.SENDING, S.SENT)


@pytest.mark.parametrize("state", [s for s in DeliveryState if s is not S.SENDING])
async def test_an_answer_moves_a_delivery_only_as_the_table_allows(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], state: DeliveryState
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1))
    (delivery, *_) = await _claimed(stack, f"ANSWER-{state.value}", lease=60.0)
    async with stack.store.engine.begin() as conn:
        await conn.execute(update(deliveries).where(deliveries.c.id == delivery).values(state=state.value))
    target = await stack.store.answers.target(delivery)
    assert target is not None
    done = await stack.store.answers.record(target, Answer.RECEIVED, via="link")
    row = await stack.store.deliveries.get(delivery)
    assert row is not None
    assert done.acknowledged == allowed(state, S.ACKNOWLEDGED)
    assert row["state"] == (S.ACKNOWLEDGED if allowed(state, S.ACKNOWLEDGED) else state)


@pytest.mark.parametrize("state", list(DeliveryState))
async def test_an_outcome_is_written_only_to_a_row_being_sent(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], state: DeliveryState
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1))
    (delivery, *_) = await _claimed(stack, f"OUTCOME-{state.value}", lease=60.0)
    async with stack.store.engine.begin() as conn:
        await conn.execute(update(deliveries).where(deliveries.c.id == delivery).values(state=state.value))
    applied = await stack.store.deliveries.record([Outcome(delivery, S.SENT, 1, 250, "ok")])
    row = await stack.store.deliveries.get(delivery)
    assert row is not None
    assert bool(applied) == (state is S.SENDING) and allowed(S.SENDING, S.SENT)
    assert row["state"] == (S.SENT if state is S.SENDING else state)


async def test_a_bounce_that_comes_back_before_the_send_is_recorded_bounces_it_and_keeps_the_send(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], db_url: str
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1), database_url=db_url)
    (delivery, *_) = await _claimed(stack, "RACE-BOUNCE", lease=60.0)
    kept = await stack.store.returns.record(
        ReturnedMail(
            kind="bounce", delivery_id=delivery, token_valid=True, recipient="x@example.jp",
            status="5.1.1", diagnostic="550 5.1.1 user unknown", subject="Undelivered", message=b"...",
        )
    )
    assert "when its send is recorded" in kept.outcome
    at = datetime.now(UTC)
    await stack.store.deliveries.record([Outcome(delivery, S.SENT, 1, 250, "2.0.0 Ok: queued", at)])
    row = await stack.store.deliveries.get(delivery)
    assert row is not None
    assert (row["state"], row["last_code"]) == ("bounced", 250) and row["sent_at"] is not None
    assert row["last_reply"] == "bounced: 5.1.1 550 5.1.1 user unknown"
    events = [(e["state"], e["smtp_code"], e["smtp_reply"]) for e in await stack.store.deliveries.events(delivery)]
    assert events[-2:] == [
        ("sent", 250, "2.0.0 Ok: queued"),
        ("bounced", 250, "bounced: 5.1.1 550 5.1.1 user unknown"),
    ]
