"""Throttling: which replies are about load, the host's sending window, and the mailbox playing a relay's limits."""

from __future__ import annotations

import uuid
from pathlib import Path

import aiosmtplib
import pytest

from ceptoar.errors import TemporaryDeliveryError, Throttled
from ceptoar.mail.throttle import DECREASE, HOLD, STALE, SendWindow, is_throttling
from ceptoar.mailbox import MaildirHandler, count, start_mailbox
from ceptoar.mailbox.limits import RelayLimits
from ceptoar.registry import RegistryRow
from ceptoar.retry import GiveUp, Retry, RetryPolicy
from tests.conftest import StackFactory
from tests.harness import FaultyMailbox, MailboxServer, notice_doc, running, subset


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (421, "4.7.0 relay.lg.example Error: too many connections from 192.0.2.1"),
        (421, "4.3.2 Service shutting down"),
        (451, "4.7.1 Error: too much mail from 192.0.2.1"),
        (452, "4.5.3 Too many recipients or connections"),
        (450, "4.7.1 Rate limit exceeded, slow down"),
        (451, "4.4.5 Insufficient system storage, congestion"),
        (454, "4.7.0 TLS not available due to local problem"),
    ],
)
def test_replies_about_load_or_rate_are_throttling(code: int, message: str) -> None:
    assert is_throttling(code, message)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (452, "4.2.2 Mailbox full"),
        (450, "4.2.0 <a@lg.example>: Recipient address rejected: mailbox unavailable"),
        (451, "4.7.1 Greylisted, try again later"),  # greylisting wants the retry delay
        (451, "4.3.0 The message could not be stored; try again later"),
        (550, "5.7.1 Rate limit exceeded"),  # permanent whatever it says
        (554, "5.7.1 too much mail"),
    ],
)
def test_replies_about_the_recipient_or_permanent_are_not(code: int, message: str) -> None:
    assert not is_throttling(code, message)


def test_throttling_costs_no_attempt_and_a_recipients_4xx_does() -> None:
    policy = RetryPolicy([10, 60])
    throttled = policy.next_step(3, Throttled("4.7.1 Error: too much mail", code=451))
    assert isinstance(throttled, Retry) and not throttled.counts
    assert throttled.reason == "throttled, no attempt spent: 451 4.7.1 Error: too much mail"
    full = policy.next_step(3, TemporaryDeliveryError("4.2.2 Mailbox full", code=452))
    assert isinstance(full, GiveUp)  # the third attempt was the last


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _window(clock: Clock, *, max_rate: float | None = None, shared: bool = False) -> SendWindow:
    return SendWindow(f"test-{uuid.uuid4().hex}:25", max_rate=max_rate, shared=shared, clock=clock)


def test_sends_are_not_paced_until_the_relay_pushes_back_then_slow_to_what_it_took() -> None:
    clock = Clock()
    window = _window(clock)
    for _ in range(500):
        assert window.reserve() == 0.0
        window.accepted()
        clock.now += 0.001  # 1,000 a second
    rate = window.throttled()
    assert rate is not None and rate == pytest.approx(DECREASE * 500)
    waits = [window.reserve() for _ in range(4)]
    assert waits == pytest.approx([0.0, 1 / rate, 2 / rate, 3 / rate])


def test_one_burst_of_refusals_is_one_decrease() -> None:
    clock = Clock()
    window = _window(clock, max_rate=400)
    first = window.throttled()
    assert first is not None
    clock.now += HOLD / 2
    assert window.throttled() is None and window.rate == first
    clock.now += HOLD
    second = window.throttled()
    assert second is not None and second < first


def test_accepted_mail_grows_the_rate_up_to_the_cap_only() -> None:
    clock = Clock()
    window = _window(clock, max_rate=100)
    assert window.rate == 100
    lowered = window.throttled()
    assert lowered is not None and lowered < 100
    for _ in range(2000):
        window.accepted()
        clock.now += 0.01
    assert window.rate == 100


def test_a_window_left_idle_starts_again_from_the_rate_last_refused() -> None:
    clock = Clock()
    window = _window(clock)
    for _ in range(200):
        window.accepted()
        clock.now += 0.005
    lowered = window.throttled()
    assert lowered is not None and lowered < 200
    clock.now += STALE + 1
    window.reserve()
    assert window.rate == pytest.approx(200)  # what the relay last refused, not the lowered rate


def test_every_process_of_the_host_keeps_to_one_window() -> None:
    clock = Clock()
    relay = f"test-{uuid.uuid4().hex}:2525"
    one = SendWindow(relay, max_rate=100, clock=clock)
    other = SendWindow(relay, max_rate=100, clock=clock)
    try:
        assert one.shared and other.shared
        waits = [one.reserve(), other.reserve(), one.reserve(), other.reserve()]
        assert waits == pytest.approx([0.0, 0.01, 0.02, 0.03])
        lowered = one.throttled()
        assert lowered is not None and other.rate == one.rate == lowered < 100
        assert one.path is not None and one.path == other.path
        one.close()
        assert one.path.exists()  # the other still sends through it
    finally:
        one.close()
        other.close()
    assert one.path is not None and not one.path.exists()  # the last to let go removed it


def test_the_mailbox_plays_a_relays_session_and_rate_limits() -> None:
    clock = Clock()
    limits = RelayLimits(max_connections=2, rate=3, clock=clock)
    assert limits.open_session() and limits.open_session() and not limits.open_session()
    limits.close_session()
    assert limits.open_session()
    assert [limits.take_message() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5
    assert not limits.take_message()
    clock.now += 0.6  # the first three are over a second old
    assert limits.take_message()
    assert (limits.refused_sessions, limits.refused_messages) == (1, 2)


# On the running services: RabbitMQ, SQLite, and the mailbox as a relay that pushes back.


async def test_throttling_replies_cost_no_attempt_and_a_550_after_them_still_fails(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 2)
    busy, gone = rows[0].email, rows[1].email
    too_much = "451 4.7.1 Error: too much mail from 127.0.0.1"
    # More throttling replies than the test's three attempts: were they counted, busy would fail.
    mailbox.handler.script[busy] = [too_much, "421 4.7.0 Error: too many connections", too_much, too_much]  # type: ignore[union-attr]
    mailbox.handler.script[gone] = [too_much, f"550 5.1.1 <{gone}>: Recipient address rejected"]  # type: ignore[union-attr]
    stack = await make_stack(mailbox=mailbox, rows=rows)
    assert RetryPolicy.from_settings(stack.settings).max_attempts == 3
    async with running(stack.settings):
        await stack.publish(notice_doc(id="THROTTLE-1"))
        counts = await stack.wait_settled("THROTTLE-1")
    assert counts == {"sent": 3, "failed": 1}
    alert = await stack.store.alerts.resolve("THROTTLE-1")

    sent = await stack.store.deliveries.find(alert.id, busy)
    assert sent is not None and (sent["state"], sent["attempts"]) == ("sent", 1)
    events = await stack.store.deliveries.events(sent["id"])
    refused = [e for e in events if e["smtp_code"] in (421, 451)]
    assert [(e["state"], e["attempt"]) for e in refused] == [("queued", 0)] * 4
    assert refused[0]["smtp_reply"] == "throttled, no attempt spent: 451 4.7.1 Error: too much mail from 127.0.0.1"
    assert count(mailbox.root, busy) == 1

    failed = await stack.store.deliveries.find(alert.id, gone)
    assert failed is not None
    assert (failed["state"], failed["attempts"], failed["last_code"]) == ("failed", 1, 550)


async def test_a_fanout_through_a_relay_that_pushes_back_is_all_sent_without_spending_attempts(
    make_stack: StackFactory, tmp_path: Path, registry_rows: list[RegistryRow]
) -> None:
    handler = FaultyMailbox(tmp_path / "relay")
    handler.limits = RelayLimits(max_connections=2, rate=50)
    server = await start_mailbox(handler, port=0)
    relay = MailboxServer(handler.root, server.sockets[0].getsockname()[1], handler)
    rows = subset(registry_rows, 60)  # 120 addresses: over two seconds at 50 a second
    try:
        stack = await make_stack(mailbox=relay, rows=rows, mailer_processes=1)
        async with running(stack.settings):
            await stack.publish(notice_doc(id="PUSHBACK-1"))
            counts = await stack.wait_settled("PUSHBACK-1")
    finally:
        server.close()
        await server.wait_closed()
    assert counts == {"sent": len(rows)}
    assert handler.limits.refused_sessions > 0 and handler.limits.refused_messages > 0
    alert = await stack.store.alerts.resolve("PUSHBACK-1")
    attempts = []
    for row in rows:
        delivery = await stack.store.deliveries.find(alert.id, row.email)
        assert delivery is not None
        attempts.append(delivery["attempts"])
        states = {e["state"] for e in await stack.store.deliveries.events(delivery["id"])}
        assert not states & {"deferred", "failed"}
    assert set(attempts) == {1}
    assert sum(count(relay.root, row.email) for row in rows) == len(rows)


async def test_a_discarding_mailbox_accepts_and_files_nothing(tmp_path: Path) -> None:
    handler = MaildirHandler(tmp_path / "sink", discard=True)
    server = await start_mailbox(handler, port=0)
    try:
        port = server.sockets[0].getsockname()[1]
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as smtp:
            await smtp.sendmail("a@ceptoar.example", ["primary@130001.lg.example"], b"Subject: x\r\n\r\nx\r\n")
    finally:
        server.close()
        await server.wait_closed()
    assert handler.accepted == 1 and count(handler.root, "primary@130001.lg.example") == 0
