"""Retry policy in one place: what counts as transient, and how long to wait.

Two kinds of waiting live here. A store or broker outage is waited out
in-process with exponential backoff, holding the message that needs it,
so an outage never turns into dead-lettered work. A deferred delivery
waits in a TTL queue for the delay its attempt number picks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import aio_pika.exceptions
import sqlalchemy.exc

from ceptoar.log import get_logger

__all__ = ["TRANSIENT", "Stopping", "deferral_delay", "is_transient", "pause", "persist"]

log = get_logger(__name__)

T = TypeVar("T")

# Failures of the store or the broker, not of the work itself.
TRANSIENT: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    aio_pika.exceptions.AMQPError,
    # Raised on a channel that a lost connection closed, until it reopens.
    aio_pika.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)

# SQLSTATEs that say "the database cannot serve you right now", not "your
# request is wrong": connection exceptions (08), insufficient resources (53),
# operator intervention such as a shutdown (57P), a database not accepting
# connections (55000), and a serialization failure or deadlock to retry.
TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57P")
TRANSIENT_SQLSTATES = frozenset({"55000", "40001", "40P01"})

FIRST_WAIT = 0.5
LONGEST_WAIT = 30.0


def is_transient(exc: BaseException) -> bool:
    """True when `exc` is the store or the broker being unavailable, not a bad request."""
    if isinstance(exc, TRANSIENT):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        state = str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or "")
        return state in TRANSIENT_SQLSTATES or state.startswith(TRANSIENT_SQLSTATE_CLASSES)
    return False


class Stopping(Exception):
    """The process is stopping while it waited out an outage; give the work back."""


async def persist(operation: Callable[[], Awaitable[T]], *, stop: asyncio.Event, what: str) -> T:
    """Run `operation` until it gets past transient failures; raise Stopping if told to stop."""
    wait = FIRST_WAIT
    while True:
        try:
            return await operation()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if stop.is_set():
                raise Stopping(what) from exc
            log.error("transient_failure", during=what, error=repr(exc), retry_in=wait)
        await pause(wait, stop=stop)
        wait = min(wait * 2, LONGEST_WAIT)


async def pause(seconds: float, *, stop: asyncio.Event) -> bool:
    """Sleep `seconds`, or less if `stop` is set meanwhile; True when stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


def deferral_delay(delays: Sequence[float], attempt: int) -> float:
    """Seconds before the attempt after `attempt` (the last delay repeats)."""
    return delays[min(attempt, len(delays)) - 1]
