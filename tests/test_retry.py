"""What counts as an outage of the store or the broker, and what a failed delivery does next."""

from __future__ import annotations

import asyncio
import errno
import random

import pytest
import sqlalchemy.exc

from ceptoar.errors import PermanentDeliveryError, RelayUnavailable, TemporaryDeliveryError
from ceptoar.retry import GiveUp, Retry, RetryPolicy, Stopping, is_transient, outlast_outages
from ceptoar.runtime import finish_within


class _Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "transient"),
    [("08006", True), ("57P01", True), ("55000", True), ("40001", True), ("23505", False), ("42P01", False)],
)
def test_database_errors_by_sqlstate(sqlstate: str, transient: bool) -> None:
    exc = sqlalchemy.exc.DBAPIError("SELECT 1", {}, _Orig(sqlstate))
    assert is_transient(exc) is transient


def test_connection_errors_are_transient_and_bugs_are_not() -> None:
    assert is_transient(ConnectionRefusedError())
    assert is_transient(TimeoutError())
    assert not is_transient(KeyError("x"))
    assert not is_transient(sqlalchemy.exc.IntegrityError("INSERT", {}, _Orig("23505")))


def test_only_socket_errors_that_say_the_network_is_away_are_outages() -> None:
    assert is_transient(OSError(errno.EHOSTUNREACH, "No route to host"))
    assert is_transient(OSError(errno.ENETUNREACH, "Network is unreachable"))
    assert not is_transient(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_transient(PermissionError(errno.EACCES, "Permission denied"))
    assert not is_transient(FileNotFoundError(errno.ENOENT, "No such file"))


def test_a_relay_answer_is_never_an_outage_of_the_store_or_broker() -> None:
    # TemporaryDeliveryError is a ConnectionError; what follows it is the retry policy's to say.
    assert not is_transient(TemporaryDeliveryError("try later", code=451))
    assert not is_transient(RelayUnavailable("connection refused"))


def test_a_temporary_failure_is_retried_after_the_attempts_delay_then_given_up() -> None:
    policy = RetryPolicy([10.0, 60.0, 300.0], rng=random.Random(7))
    error = TemporaryDeliveryError("4.2.2 mailbox full", code=452)
    steps = [policy.next_step(attempt, error) for attempt in (1, 2, 3)]
    assert [s.queue_delay for s in steps if isinstance(s, Retry)] == [10.0, 60.0, 300.0]
    assert all(isinstance(s, Retry) and s.counts and s.reason == "4.2.2 mailbox full" for s in steps)
    assert policy.max_attempts == 4
    assert policy.next_step(4, error) == GiveUp("4.2.2 mailbox full (attempts exhausted: 4)")


def test_retry_delays_are_jittered_below_the_configured_delay() -> None:
    policy = RetryPolicy([60.0])
    delays = [
        step.delay
        for step in (policy.next_step(1, TemporaryDeliveryError("busy")) for _ in range(500))
        if isinstance(step, Retry)
    ]
    assert len(delays) == 500
    assert all(60.0 * 0.8 <= d <= 60.0 for d in delays)
    # Deliveries deferred together come back spread over the window, not in lock-step.
    assert max(delays) - min(delays) > 60.0 * 0.15 and len({round(d, 3) for d in delays}) > 400


def test_permanent_failures_and_bugs_are_given_up_at_once_and_an_unreachable_relay_costs_nothing() -> None:
    policy = RetryPolicy([10.0])
    assert policy.next_step(1, PermanentDeliveryError("5.1.1 no such user", code=550)) == GiveUp(
        "5.1.1 no such user"
    )
    bug = policy.next_step(1, KeyError("subject"))
    assert isinstance(bug, GiveUp) and bug.reason == "internal error: KeyError: 'subject'"
    away = policy.next_step(1, RelayUnavailable("connection refused"))
    assert away == Retry(0.0, 0.0, "not attempted: connection refused", counts=False)


async def test_outlast_outages_waits_out_transient_failures_but_not_bugs() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionResetError("broker gone")
        return "done"

    assert await outlast_outages(flaky, stop=asyncio.Event(), what="t") == "done"
    assert calls == 3

    async def buggy() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await outlast_outages(buggy, stop=asyncio.Event(), what="t")


async def test_outlast_outages_gives_the_work_back_when_stopping() -> None:
    stop = asyncio.Event()
    stop.set()

    async def down() -> None:
        raise ConnectionRefusedError()

    with pytest.raises(Stopping):
        await outlast_outages(down, stop=stop, what="t")


async def test_work_that_outlives_its_grace_after_a_stop_is_cancelled() -> None:
    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()  # never notices the stop
        except asyncio.CancelledError:
            cancelled.set()
            raise

    work = asyncio.create_task(stubborn())
    asyncio.get_running_loop().call_later(0.05, stop.set)
    await asyncio.wait_for(finish_within(work, stop, grace=0.1, what="test"), 5)
    assert cancelled.is_set() and work.cancelled()

    # Work that finishes within its grace is waited for, and its error is its own.
    async def finishing() -> None:
        await stop.wait()
        await asyncio.sleep(0.05)
        raise ValueError("its own")

    with pytest.raises(ValueError, match="its own"):
        await finish_within(asyncio.create_task(finishing()), stop, grace=5, what="test")
