"""The delivery store, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from ceptoar.dispatch.audience import in_area
from ceptoar.errors import UnknownAlert
from ceptoar.feed import parse_notice
from ceptoar.model.notice import Notice
from ceptoar.model.states import DeliveryState
from ceptoar.registry import RegistryRow
from ceptoar.store import Outcome, Store, StoredAlert
from ceptoar.store.tables import deliveries
from tests.harness import notice_doc, subset


def _notice(**fields: object) -> Notice:
    return parse_notice(json.dumps(notice_doc(**fields)))


async def _create(
    store: Store, notice: Notice, *, area: list[str] | None = None, severity: str = "high", **more: Any
) -> StoredAlert:
    recipients = [c for c in await store.subscribers.candidates() if in_area(c, area or [])]
    return await store.alerts.create(
        notice=notice,
        payload="{}",
        fmt="json",
        severity=severity,
        rules=[f"sender-{severity}"],
        audience=[c.address_id for c in recipients],
        message_id_domain="ceptoar.example",
        **more,
    )


async def _claimed_one(store: Store, registry_rows: list[RegistryRow]) -> int:
    """The id of a delivery of a fresh alert, claimed by attempt 1."""
    await store.subscribers.import_rows(subset(registry_rows, 1))
    stored = await _create(store, _notice())
    one = stored.delivery_ids[0]
    await store.deliveries.claim([one], lease_seconds=60, max_attempts=6)
    return one


async def test_candidates_follow_registry_changes_made_by_another_process(
    store: Store, db_url: str, registry_rows: list[RegistryRow]
) -> None:
    tokyo = [r for r in registry_rows if r.code.startswith("13")]
    await store.subscribers.import_rows(tokyo[:10])
    assert [c.email for c in await store.subscribers.candidates()] == [r.email for r in tokyo[:10]]
    async with await Store.open(db_url) as other:
        await other.subscribers.import_rows(tokyo[:9], replace=True)  # one address gone
        assert len(await store.subscribers.candidates()) == 9
        await other.subscribers.import_rows(tokyo[:12])  # two new ones
        assert len(await store.subscribers.candidates()) == 12
        changed = [replace(r, language="en") if i == 0 else r for i, r in enumerate(tokyo[:12])]
        await other.subscribers.import_rows(changed)
        assert (await store.subscribers.candidates())[0].language == "en"


async def test_candidates_are_read_a_chunk_at_a_time_in_address_order(
    store: Store, db_url: str, registry_rows: list[RegistryRow]
) -> None:
    rows = [
        replace(r, categories=("vulnerability",), prefectures=("13", "14")) if i % 9 == 0 else r
        for i, r in enumerate(registry_rows)
    ]
    await store.subscribers.import_rows(rows)
    whole = await store.subscribers.candidates()
    async with aclosing(store.subscribers.candidate_chunks(500)) as chunks:
        sizes, read = [], []
        async for chunk in chunks:
            sizes.append(len(chunk))
            read.extend(chunk)
    assert sizes == [500] * 7 + [76]
    assert read == whole
    assert [c.address_id for c in read] == sorted(c.address_id for c in read)
    subscribed = next(c for c in read if c.email == rows[0].email)
    assert (subscribed.categories, subscribed.prefectures) == (("vulnerability",), ("13", "14"))
    # 3,576 addresses fit in one chunk of the default size: they are kept, and follow another process's change.
    async with await Store.open(db_url) as other:
        await other.subscribers.import_rows([replace(rows[1], language="en")])
    assert next(c for c in await store.subscribers.candidates() if c.email == rows[1].email).language == "en"


async def test_registry_import_is_idempotent_and_counted(
    store: Store, registry_rows: list[RegistryRow]
) -> None:
    first = await store.subscribers.import_rows(registry_rows)
    again = await store.subscribers.import_rows(registry_rows)
    counts = await store.subscribers.counts()
    assert (first.organisations_added, first.addresses_added) == (1788, 3576)
    assert (again.organisations_added, again.addresses_added, again.addresses_updated) == (0, 0, 0)
    assert (counts.prefectures, counts.municipalities, counts.addresses) == (47, 1741, 3576)
    assert await store.subscribers.export_rows() == sorted(
        registry_rows, key=lambda r: (r.code, r.role != "primary")
    )


async def test_replace_import_deactivates_what_the_file_lacks(
    store: Store, registry_rows: list[RegistryRow]
) -> None:
    await store.subscribers.import_rows(registry_rows)
    tokyo = [r for r in registry_rows if r.code.startswith("13")]
    result = await store.subscribers.import_rows(tokyo, replace=True)
    counts = await store.subscribers.counts()
    assert result.addresses_deactivated == 3576 - len(tokyo)
    assert counts.addresses == len(tokyo)
    assert len(await store.subscribers.candidates()) == len(tokyo)


async def test_prefecture_area_takes_in_its_municipalities(
    store: Store, registry_rows: list[RegistryRow]
) -> None:
    await store.subscribers.import_rows(registry_rows)
    tokyo_codes = {r.code for r in registry_rows if r.code.startswith("13")}
    candidates = await store.subscribers.candidates()
    audience = [c for c in candidates if in_area(c, ["13"])]
    assert {r.code for r in audience} == tokyo_codes
    assert "130001" in tokyo_codes and len(tokyo_codes) == 63
    chiyoda = [c for c in candidates if in_area(c, ["131016", "01"])]
    assert {r.code for r in chiyoda} == {"131016"} | {r.code for r in registry_rows if r.code[:2] == "01"}
    assert await store.subscribers.unknown_codes(["131016", "131008"]) == ["131008"]


async def test_alert_stores_one_queued_delivery_per_address(
    store: Store, registry_rows: list[RegistryRow]
) -> None:
    await store.subscribers.import_rows(subset(registry_rows, 5))
    stored = await _create(store, _notice(id="N-1"))
    assert not stored.duplicate and len(stored.delivery_ids) == 10
    assert await store.alerts.counts(stored.alert_id) == {"queued": 10}
    events = await store.deliveries.events(stored.delivery_ids[0])
    assert [(e["state"], e["attempt"]) for e in events] == [("queued", 0)]
    row = await store.deliveries.get(stored.delivery_ids[0])
    assert row is not None
    assert row["message_id"].startswith(f"<{stored.alert_id}.") and row["message_id"].endswith(
        "@ceptoar.example>"
    )


async def test_same_notice_twice_is_one_alert(store: Store, registry_rows: list[RegistryRow]) -> None:
    await store.subscribers.import_rows(subset(registry_rows, 3))
    notice = _notice(id="N-dup")
    first, second = await asyncio.gather(_create(store, notice), _create(store, notice))
    assert sorted([first.duplicate, second.duplicate]) == [False, True]
    assert first.alert_id == second.alert_id
    assert await store.alerts.counts(first.alert_id) == {"queued": 6}
    # The same id from another source is another notice.
    other = await _create(store, _notice(id="N-dup", source="jpcert"))
    assert not other.duplicate and other.alert_id != first.alert_id


async def test_claim_wins_once(store: Store, registry_rows: list[RegistryRow]) -> None:
    await store.subscribers.import_rows(subset(registry_rows, 2))
    stored = await _create(store, _notice())
    ids = stored.delivery_ids
    a, b = await asyncio.gather(
        store.deliveries.claim(ids, lease_seconds=60, max_attempts=6),
        store.deliveries.claim(ids, lease_seconds=60, max_attempts=6),
    )
    assert sorted(c.id for c in a + b) == ids
    assert await store.deliveries.claim(ids, lease_seconds=60, max_attempts=6) == []
    claimed = (a + b)[0]
    assert claimed.attempt == 1 and claimed.org_code in {r.code for r in registry_rows}


async def test_outcome_applies_only_to_the_attempt_that_claimed(
    store: Store, registry_rows: list[RegistryRow]
) -> None:
    one = await _claimed_one(store, registry_rows)
    stale = Outcome(one, DeliveryState.SENT, 2, 250, "Ok")
    assert await store.deliveries.record([stale]) == []
    deferred = Outcome(one, DeliveryState.DEFERRED, 1, 451, "4.3.0 try later")
    assert await store.deliveries.record([deferred]) == [deferred]
    assert await store.deliveries.record([deferred]) == []  # no longer `sending`
    (again,) = await store.deliveries.claim([one], lease_seconds=60, max_attempts=6)
    assert again.attempt == 2
    sent = Outcome(one, DeliveryState.SENT, 2, 250, "2.0.0 Ok")
    assert await store.deliveries.record([sent]) == [sent]
    row = await store.deliveries.get(one)
    assert row is not None
    assert (row["state"], row["attempts"], row["last_code"], row["last_reply"]) == (
        "sent",
        2,
        250,
        "2.0.0 Ok",
    )
    assert row["sent_at"] is not None and row["lease_until"] is None
    events = await store.deliveries.events(one)
    assert [(e["state"], e["attempt"], e["smtp_code"]) for e in events] == [
        ("queued", 0, None),
        ("sending", 1, None),
        ("deferred", 1, 451),
        ("sending", 2, None),
        ("sent", 2, 250),
    ]


async def _create_claiming(
    store: Store, claim: int, history: dict[int, list[str]] | None = None
) -> tuple[StoredAlert, Notice, list[int]]:
    """A critical alert to every address, its first `claim` deliveries claimed; its notice and audience."""
    notice = _notice(severity="critical")
    stored = await _create(
        store, notice, severity="critical", history=history, first=claim, claim=True, lease_seconds=60
    )
    return stored, notice, [c.address_id for c in await store.subscribers.candidates()]


async def _pending_chunks(store: Store, alert_id: str, first_chunk: int = 500) -> list[list[int]]:
    return [ids async for ids in store.alerts.store_pending(alert_id, first_chunk=first_chunk)]


async def test_a_writer_that_died_half_way_is_run_again_without_a_second_row(
    store: Store, registry_rows: list[RegistryRow]
) -> None:
    await store.subscribers.import_rows(subset(registry_rows, 5))
    stored, _, audience = await _create_claiming(store, 2)
    # The first chunk is committed, then its writer dies.
    writer = store.alerts.store_pending(stored.alert_id, first_chunk=3)
    first = await anext(writer)
    await writer.aclose()
    assert len(first) == 3
    rest = [i for c in await _pending_chunks(store, stored.alert_id) for i in c]
    assert len(rest) == len(audience) - 2 - 3 and not set(rest) & set(first)
    assert sum((await store.alerts.counts(stored.alert_id)).values()) == len(audience)
    rows = await store.deliveries.report(stored.alert_id)
    assert len({r["email"] for r in rows}) == len(rows) == len(audience)


async def test_create_claims_the_first_deliveries_and_leaves_the_rest_pending(
    store: Store, registry_rows: list[RegistryRow]
) -> None:
    await store.subscribers.import_rows(subset(registry_rows, 20))
    stored, notice, audience = await _create_claiming(store, 3)
    handed = [c.id for c in stored.claimed]
    assert len(handed) == 3 and {c.attempt for c in stored.claimed} == {1}
    assert stored.delivery_ids == [] and stored.pending
    # An address still pending counts as queued: nobody looking sees the alert as settled.
    assert await store.alerts.counts(stored.alert_id) == {"sending": 3, "queued": len(audience) - 3}
    again = await store.alerts.existing(notice.source, notice.id)
    assert again is not None and again.pending and again.delivery_ids == []

    chunks = await _pending_chunks(store, stored.alert_id, first_chunk=2)
    assert [len(c) for c in chunks[:3]] == [2, 4, 8]  # growing, each committed on its own
    rest = [i for c in chunks for i in c]
    assert await _pending_chunks(store, stored.alert_id) == []  # once only
    assert len(rest) == len(audience) - 3 and not set(rest) & set(handed)
    assert await store.alerts.counts(stored.alert_id) == {"sending": 3, "queued": len(audience) - 3}
    rows = await store.deliveries.report(stored.alert_id)
    assert sorted(r["email"] for r in rows) == sorted(r.email for r in await store.subscribers.candidates())
    assert [e["state"] for e in await store.deliveries.events(handed[0])] == ["queued", "sending"]
    assert [e["state"] for e in await store.deliveries.events(rest[0])] == ["queued"]
    assert await store.deliveries.claim(handed, lease_seconds=60, max_attempts=6) == []


async def test_pending_deliveries_keep_their_thread_and_a_cancel_drops_them(
    store: Store, registry_rows: list[RegistryRow]
) -> None:
    await store.subscribers.import_rows(subset(registry_rows, 3))
    audience = [r.address_id for r in await store.subscribers.candidates()]
    last = audience[-1]
    stored, _, _ = await _create_claiming(store, 2, history={last: ["<a@x.example>", "<b@x.example>"]})
    written = [i for c in await _pending_chunks(store, stored.alert_id) for i in c]
    rows = [await store.deliveries.get(i) for i in written]
    (row,) = [r for r in rows if r is not None and r["address_id"] == last]
    assert (row["in_reply_to"], row["references"]) == ("<b@x.example>", "<a@x.example> <b@x.example>")

    cancelled, _, _ = await _create_claiming(store, 2)
    alert = await store.alerts.get(cancelled.alert_id)
    assert alert is not None and alert.thread_id is not None
    await store.threads.cancel(alert.thread_id)
    assert await _pending_chunks(store, cancelled.alert_id) == []
    assert sum((await store.alerts.counts(cancelled.alert_id)).values()) == 2


async def test_expired_lease_can_be_claimed_again(store: Store, registry_rows: list[RegistryRow]) -> None:
    one = await _claimed_one(store, registry_rows)
    assert await store.deliveries.expired_leases() == []
    assert await store.deliveries.claim([one], lease_seconds=60, max_attempts=6) == []
    async with store.engine.begin() as conn:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id == one)
            .values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert await store.deliveries.expired_leases() == [(one, "high")]
    (again,) = await store.deliveries.claim([one], lease_seconds=60, max_attempts=6)
    assert again.attempt == 2


async def test_alert_is_found_by_alert_id_notice_id_or_source_and_id(
    store: Store, registry_rows: list[RegistryRow]
) -> None:
    await store.subscribers.import_rows(subset(registry_rows, 1))
    stored = await _create(store, _notice(id="NISC-9"))
    for ident in (stored.alert_id, "NISC-9", "nisc:NISC-9"):
        assert (await store.alerts.resolve(ident)).id == stored.alert_id
    await _create(store, _notice(id="NISC-9", source="jpcert"))
    with pytest.raises(UnknownAlert, match="ambiguous"):
        await store.alerts.resolve("NISC-9")
    with pytest.raises(UnknownAlert):
        await store.alerts.resolve("nope")


async def test_naive_datetimes_are_refused(store: Store) -> None:
    from ceptoar.store.tables import UtcDateTime

    with pytest.raises(ValueError, match="naive"):
        UtcDateTime().process_bind_param(datetime(2026, 1, 1), store.engine.dialect)


async def test_a_receipt_abandoned_while_publishing_is_taken_over(store: Store) -> None:
    from ceptoar.store.tables import receipts

    key = {"source": "nisc", "source_id": "R-1"}
    assert await store.feeds.receive(**key, fmt="json", feed="nisc") is None
    assert await store.feeds.receive(**key, fmt="json", feed="nisc") == "publishing"  # a request in flight
    async with store.engine.begin() as conn:
        await conn.execute(update(receipts).values(received_at=datetime.now(UTC) - timedelta(seconds=61)))
    assert await store.feeds.receive(**key, fmt="json", feed="nisc") is None  # that request died
    await store.feeds.published(**key)
    assert await store.feeds.receive(**key, fmt="json", feed="nisc") == "published"


async def test_sqlite_reads_do_not_wait_for_a_writer(
    tmp_path: Path, registry_rows: list[RegistryRow]
) -> None:
    """An operator's status read answers while the service holds the write lock."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'locks.db'}"
    async with await Store.open(url) as service, await Store.open(url) as operator:
        await service.subscribers.import_rows(subset(registry_rows, 2))
        async with service.engine.begin() as writing:  # BEGIN IMMEDIATE: the write lock is held
            await writing.execute(update(deliveries).values(attempts=0))
            counts = await asyncio.wait_for(operator.subscribers.counts(), 2)
        assert counts.addresses == 4


async def test_an_outcome_keeps_the_time_the_server_answered(
    store: Store, registry_rows: list[RegistryRow]
) -> None:
    one = await _claimed_one(store, registry_rows)
    answered = datetime(2026, 11, 28, 12, 0, 0, 123000, tzinfo=UTC)
    await store.deliveries.record([Outcome(one, DeliveryState.SENT, 1, 250, "Ok", answered)])
    row = await store.deliveries.get(one)
    assert row is not None and row["sent_at"] == answered
    last = (await store.deliveries.events(one))[-1]
    assert (last["at"], last["state"], last["smtp_code"], last["smtp_reply"]) == (answered, "sent", 250, "Ok")


async def test_one_record_logs_sent_and_deferred_outcomes_each_with_its_reply(
    store: Store, registry_rows: list[RegistryRow]
) -> None:
    sent, deferred = await _claimed_one(store, registry_rows), await _claimed_one(store, registry_rows)
    answered = datetime(2026, 11, 28, 12, 0, 0, 123000, tzinfo=UTC)
    outcomes = [
        Outcome(sent, DeliveryState.SENT, 1, 250, "2.0.0 Ok: queued as A1", answered),
        Outcome(
            deferred, DeliveryState.DEFERRED, 1, 451, "4.7.1 Greylisted", answered + timedelta(seconds=1)
        ),
    ]
    assert await store.deliveries.record(outcomes) == outcomes
    for outcome in outcomes:
        last = (await store.deliveries.events(outcome.delivery_id))[-1]
        assert (last["at"], last["state"], last["attempt"], last["smtp_code"], last["smtp_reply"]) == (
            outcome.at,
            outcome.state.value,
            1,
            outcome.code,
            outcome.reply,
        )


async def test_a_writer_waits_out_another_process_holding_the_write_lock(
    tmp_path: Path, registry_rows: list[RegistryRow]
) -> None:
    """SQLite has one writer: a second one waits for the lock instead of failing."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    async with await Store.open(url) as one, await Store.open(url) as two:
        async with one.engine.begin():  # BEGIN IMMEDIATE: the write lock, as another process holds it
            waiting = asyncio.create_task(two.subscribers.import_rows(subset(registry_rows, 2)))
            await asyncio.sleep(0.3)
            assert not waiting.done()
        await waiting
        assert (await one.subscribers.counts()).addresses == len(subset(registry_rows, 2))


async def test_a_delivery_claimed_max_attempts_times_ends_failed_whatever_brings_it_back(
    store: Store, registry_rows: list[RegistryRow]
) -> None:
    """Each claim is an attempt: a worker that dies (or a batch that fails) every time cannot loop for ever."""
    one = await _claimed_one(store, registry_rows)  # attempt 1, then its worker died
    async with store.engine.begin() as conn:
        await conn.execute(update(deliveries).values(last_code=451, last_reply="4.4.2 lost connection"))
    for attempt in (2, 3):
        async with store.engine.begin() as conn:  # the lease runs out
            await conn.execute(update(deliveries).values(lease_until=datetime.now(UTC) - timedelta(seconds=1)))
        (again,) = await store.deliveries.claim([one], lease_seconds=60, max_attempts=3)
        assert again.attempt == attempt
    async with store.engine.begin() as conn:
        await conn.execute(update(deliveries).values(lease_until=datetime.now(UTC) - timedelta(seconds=1)))
    assert await store.deliveries.claim([one], lease_seconds=60, max_attempts=3) == []
    row = await store.deliveries.get(one)
    assert row is not None
    assert (row["state"], row["attempts"], row["lease_until"]) == ("failed", 3, None)
    assert row["last_reply"] == (
        "attempts exhausted: claimed 3 times without a recorded outcome; last reply: 4.4.2 lost connection"
    )
    events = await store.deliveries.events(one)
    assert [(e["state"], e["attempt"]) for e in events][-2:] == [("sending", 3), ("failed", 3)]
    assert events[-1]["smtp_reply"] == row["last_reply"]
    # An operator's resend starts a new series of attempts.
    assert await store.deliveries.requeue(row["alert_id"], states=[DeliveryState.FAILED], why="resend") == [one]
    (fresh,) = await store.deliveries.claim([one], lease_seconds=60, max_attempts=3)
    assert fresh.attempt == 1
