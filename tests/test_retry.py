"""What counts as a transient failure, and how long a deferred delivery waits."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy.exc

from ceptoar.retry import Stopping, deferral_delay, is_transient, persist


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


def test_deferral_delay_repeats_the_last() -> None:
    delays = [10.0, 60.0, 300.0]
    assert [deferral_delay(delays, n) for n in (1, 2, 3, 4, 9)] == [10.0, 60.0, 300.0, 300.0, 300.0]


async def test_persist_waits_out_transient_failures_but_not_bugs() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionResetError("broker gone")
        return "done"

    assert await persist(flaky, stop=asyncio.Event(), what="t") == "done"
    assert calls == 3

    async def buggy() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await persist(buggy, stop=asyncio.Event(), what="t")


async def test_persist_gives_the_work_back_when_stopping() -> None:
    stop = asyncio.Event()
    stop.set()

    async def down() -> None:
        raise ConnectionRefusedError()

    with pytest.raises(Stopping):
        await persist(down, stop=stop, what="t")
