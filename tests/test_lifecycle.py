"""TLP, targeting and an alert's lifecycle on the running stack: hold, update, cancel, expiry."""

from __future__ import annotations

import asyncio
import email
import email.policy
from contextlib import suppress
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import func, select

from ceptoar.mailbox import MaildirHandler, count, list_messages, read_message, start_mailbox
from ceptoar.mailbox.maildir import addresses
from ceptoar.registry import RegistryRow
from ceptoar.store.tables import deliveries
from tests.conftest import StackFactory
from tests.harness import (
    FaultyMailbox,
    MailboxServer,
    Stack,
    cli_env,
    notice_doc,
    run_cli_async,
    running,
    subset,
)


def _subjects(root: object, address: str) -> list[str]:
    return [e.subject for e in list_messages(root, address)]  # type: ignore[arg-type]


async def test_amber_reaches_only_security_addresses(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 5)
    stack = await make_stack(mailbox=mailbox, rows=rows)
    async with running(stack.settings):
        await stack.publish(notice_doc(id="AMBER-1", tlp="AMBER"))
        counts = await stack.wait_settled("AMBER-1")
    assert counts == {"sent": 5}
    assert set(addresses(mailbox.root)) == {r.email for r in rows if r.role == "security"}
    assert "[TLP:AMBER]" in read_message(mailbox.root, addresses(mailbox.root)[0], 1)["Subject"]


async def test_red_reaches_no_one_and_is_held_with_the_reason(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 5))
    async with running(stack.settings):
        await stack.publish(notice_doc(id="RED-1", tlp="RED"))
        await stack.publish(notice_doc(id="AFTER-RED"))
        await stack.wait_settled("AFTER-RED")
        status = await run_cli_async("status", "RED-1", env=cli_env(stack.settings))
    alert = await stack.store.alerts.resolve("RED-1")
    assert alert.state == "held"
    assert await stack.store.alerts.counts(alert.id) == {}
    assert count(mailbox.root) == 10  # only AFTER-RED
    assert "state    held: TLP:RED is never fanned out automatically" in status.stdout


async def test_a_prefecture_alert_reaches_exactly_its_municipalities_and_the_prefecture(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=registry_rows)
    async with running(stack.settings):
        await stack.publish(notice_doc(id="KANAGAWA-1", area=["14"]))
        counts = await stack.wait_settled("KANAGAWA-1")
    kanagawa = {r.email for r in registry_rows if r.code.startswith("14")}
    assert "primary@140007.lg.example" in kanagawa  # the prefecture itself
    assert "primary@141003.lg.example" in kanagawa  # 横浜市
    assert counts == {"sent": len(kanagawa)} == {"sent": 68}
    assert set(addresses(mailbox.root)) == kanagawa


def _parsed(root: object, address: str, n: int) -> EmailMessage:
    msg = read_message(root, address, n)  # type: ignore[arg-type]
    again = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert isinstance(again, EmailMessage)
    return again


async def test_an_update_threads_under_the_original_and_reaches_new_members(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    first, later = subset(registry_rows, 3), subset(registry_rows, 4)
    newcomer = next(r.email for r in later if r not in first and r.role == "primary")
    stack = await make_stack(mailbox=mailbox, rows=first)
    async with running(stack.settings):
        await stack.publish(notice_doc(id="ORIG-1", title="不正アクセスの発生について"))
        await stack.wait_settled("ORIG-1")
        await stack.store.subscribers.import_rows(later)
        await stack.publish(
            notice_doc(
                id="UPD-1",
                msg_type="update",
                references=["ORIG-1"],
                title="不正アクセスの発生について（続報）",
            )
        )
        counts = await stack.wait_settled("UPD-1")
    assert counts == {"sent": 8}
    original = _parsed(mailbox.root, first[0].email, 1)
    update = _parsed(mailbox.root, first[0].email, 2)
    assert "【更新】" in update["Subject"]
    assert update["In-Reply-To"] == original["Message-ID"]
    assert update["References"].split() == [original["Message-ID"]]
    fresh = _parsed(mailbox.root, newcomer, 1)
    assert "【更新】" in fresh["Subject"] and fresh["In-Reply-To"] is None
    upd = await stack.store.alerts.resolve("UPD-1")
    orig = await stack.store.alerts.resolve("ORIG-1")
    assert upd.thread_id == orig.id and upd.parent_id == orig.id


async def test_a_cancel_during_fan_out_stops_the_rest_and_tells_only_those_mailed(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 150)
    mailbox.handler.delay = 0.02  # type: ignore[union-attr]
    stack = await make_stack(mailbox=mailbox, rows=rows, smtp_connections=2, mailer_batch=8)
    async with running(stack.settings):
        await stack.publish(notice_doc(id="BIG-1", title="大規模障害"))
        alert = None
        while alert is None or (await stack.store.alerts.counts(alert.id)).get("sent", 0) < 30:
            await asyncio.sleep(0.05)
            try:
                alert = await stack.store.alerts.resolve("BIG-1")
            except LookupError:
                continue
        await stack.publish(
            notice_doc(id="CANCEL-1", msg_type="cancel", references=["BIG-1"], title="大規模障害（取消）")
        )
        cancel_counts = await stack.wait_settled("CANCEL-1")
        original_counts = await stack.store.alerts.counts(alert.id)
        mailed_then = {
            a
            for a in addresses(mailbox.root)
            if any("大規模障害" in s and "取消" not in s for s in _subjects(mailbox.root, a))
        }
        await asyncio.sleep(1.0)  # anything still to come would arrive now
    sent, cancelled = original_counts.get("sent", 0), original_counts.get("cancelled", 0)
    assert sent + cancelled == 300 and cancelled > 0 and sent >= 30
    assert cancel_counts == {"sent": sent}
    got_original = {
        a for a in addresses(mailbox.root) if any("【取消】" not in s for s in _subjects(mailbox.root, a))
    }
    got_cancel = {
        a for a in addresses(mailbox.root) if any("【取消】" in s for s in _subjects(mailbox.root, a))
    }
    assert got_original == mailed_then  # nothing original arrived after the cancel was processed
    assert got_cancel == got_original
    assert len(got_original) == sent
    assert (await stack.store.alerts.resolve("BIG-1")).state == "cancelled"


async def test_a_notice_referring_to_an_unknown_alert_is_held(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 2))
    async with running(stack.settings):
        await stack.publish(notice_doc(id="UPD-X", msg_type="update", references=["NEVER-SEEN"]))
        await stack.publish(notice_doc(id="AFTER-X"))
        await stack.wait_settled("AFTER-X")
    held = await stack.store.alerts.resolve("UPD-X")
    assert held.state == "held"
    assert held.held_reason == "refers to unknown notice nisc:NEVER-SEEN"
    assert await stack.store.alerts.counts(held.id) == {}


async def test_expired_alert_stops_its_unsent_deliveries(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    from datetime import UTC, datetime, timedelta

    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 3))
    soon = (datetime.now(UTC) + timedelta(seconds=0.5)).isoformat()
    stored = await stack.store_alert(notice_doc(id="EXP-1", expires=soon), published=False)
    await asyncio.sleep(0.7)  # it expires while its jobs wait
    async with running(stack.settings):
        await stack.bus.publish_jobs(stored.delivery_ids)
        await stack.store.alerts.mark_published(stored.alert_id)
        counts = await stack.wait_settled("EXP-1")
    assert counts == {"cancelled": 6}
    assert count(mailbox.root) == 0
    events = await stack.store.deliveries.events(stored.delivery_ids[0])
    assert events[-1]["state"] == "cancelled"
    assert events[-1]["smtp_reply"].startswith("not sent: the alert expired at")


async def test_test_notices_reach_only_test_subscribers_marked_as_tests(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 3)
    tester = RegistryRow(rows[0].code, rows[0].name, "drill@010006.lg.example", "backup", tests=True)
    stack = await make_stack(mailbox=mailbox, rows=[*rows, tester])
    async with running(stack.settings):
        await stack.publish(notice_doc(id="TEST-1", status="test"))
        counts = await stack.wait_settled("TEST-1")
    assert counts == {"sent": 1}
    assert addresses(mailbox.root) == ["drill@010006.lg.example"]
    assert read_message(mailbox.root, "drill@010006.lg.example", 1)["Subject"].startswith("【試験】")


class _SlowBulk(FaultyMailbox):
    """Takes `delay` seconds over each mail of a medium-severity alert; critical mail goes straight in."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        if b"\nX-Ceptoar-Severity: medium" in content:
            await asyncio.sleep(self.delay)
        filed: str = await MaildirHandler.handle_DATA(self, server, session, envelope)
        return filed


async def _first_mail_after(stack: Stack, ident: str, published: datetime, *, within: float = 30) -> float:
    """Seconds from `published` to the first mail of `ident` the relay accepted."""
    for _ in range(int(within / 0.05)):
        with suppress(LookupError):
            alert = await stack.store.alerts.resolve(ident)
            async with stack.store.engine.connect() as conn:
                first = (
                    await conn.execute(select(func.min(deliveries.c.sent_at)).where(deliveries.c.alert_id == alert.id))
                ).scalar()
            if first is not None:
                return float((first - published).total_seconds())
        await asyncio.sleep(0.05)
    raise AssertionError(f"{ident}: no mail within {within}s")


async def test_a_critical_notice_behind_a_cancel_waiting_for_mail_in_flight_is_not_held_up(
    make_stack: StackFactory, tmp_path: Path, registry_rows: list[RegistryRow]
) -> None:
    handler = _SlowBulk(tmp_path / "slow")
    handler.delay = 3.0  # each bulk mail in flight keeps the cancel waiting this long
    server = await start_mailbox(handler, port=0)
    mailbox = MailboxServer(handler.root, server.sockets[0].getsockname()[1], handler)
    rows = subset(registry_rows, 20)
    stack = await make_stack(mailbox=mailbox, rows=rows, smtp_connections=2, mailer_batch=4)
    try:
        async with running(stack.settings):
            await stack.publish(notice_doc(id="SLOW-1"))
            await _until_in_flight(stack, "SLOW-1")
            published = datetime.now(UTC)
            await stack.publish(notice_doc(id="CRIT-ALONE", severity="critical", title="単独の緊急通知"))
            alone = await _first_mail_after(stack, "CRIT-ALONE", published)

            await stack.publish(notice_doc(id="CANCEL-SLOW", msg_type="cancel", references=["SLOW-1"]))
            await asyncio.sleep(0.3)  # the dispatcher has taken the cancel, which now waits for the relay
            published = datetime.now(UTC)
            await stack.publish(notice_doc(id="CRIT-BEHIND", severity="critical", title="取消の後の緊急通知"))
            behind = await _first_mail_after(stack, "CRIT-BEHIND", published)
            cancel_counts = await stack.wait_settled("CANCEL-SLOW", within=60)
            original = await stack.store.alerts.counts((await stack.store.alerts.resolve("SLOW-1")).id)
    finally:
        server.close()
        await server.wait_closed()
    print(f"\nfirst critical mail: {alone:.2f} s alone, {behind:.2f} s behind a waiting cancel")
    assert behind < handler.delay / 2, f"{behind:.2f} s: the critical notice waited for the cancel"
    assert behind <= alone + 1.0
    # The cancel itself still went out once the mail in flight was sent, to those mailed only.
    assert original.get("cancelled", 0) > 0 and cancel_counts == {"sent": original.get("sent", 0)}


async def _until_in_flight(stack: Stack, ident: str, *, within: float = 30) -> None:
    for _ in range(int(within / 0.05)):
        with suppress(LookupError):
            alert = await stack.store.alerts.resolve(ident)
            if (await stack.store.alerts.counts(alert.id)).get("sending", 0) > 0:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{ident}: nothing in flight within {within}s")
