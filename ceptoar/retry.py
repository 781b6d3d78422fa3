"""Retry policy in one place: what a failed delivery does next, and how outages are waited out.

Two kinds of waiting live here.

A delivery that failed asks `RetryPolicy.next_step(attempt, error)`: try
again after a delay (`Retry`), or give up (`GiveUp`) with the reply the
delivery keeps. The policy owns the whole decision: a temporary failure is
retried until the attempts run out, a permanent one or an error nothing
foresaw is not, and a relay that could not be reached, or refused for load
or rate (`Throttled`), costs no attempt at all. The delay grows with the
attempt (the configured `retry_delays`, the last repeating) and is drawn a
little below it, so deliveries deferred
together do not all come back together. The mailer asks the policy; the
bus parks the job in the retry queue of the delay it was drawn from, for
the delay drawn.

A store or broker that cannot be reached is waited out in-process by
`outlast_outages`, with exponential backoff, holding the message that needs
it, so an outage never turns into dead-lettered work. It wraps calls to the
store and the bus only: `is_transient` says which failures are theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import aio_pika.exceptions
import sqlalchemy.exc

from ceptoar.config import Settings
from ceptoar.errors import DeliveryError, RelayUnavailable, TemporaryDeliveryError, Throttled
from ceptoar.log import get_logger

__all__ = [
    "TRANSIENT",
    "GiveUp",
    "Retry",
    "RetryPolicy",
    "Stopping",
    "is_transient",
    "outlast_outages",
    "pause",
    "restart_delay",
]

log = get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Retry:
    """Try the delivery again after `delay` seconds."""

    delay: float
    # The configured delay `delay` was drawn below; it names the retry queue that holds the job.
    queue_delay: float
    # What the delivery keeps as its last reply meanwhile.
    reason: str
    # False when nothing reached the relay: the attempt is given back, and the mailer
    # sends again as soon as the relay answers instead of after a delay.
    counts: bool = True


@dataclass(frozen=True)
class GiveUp:
    """Stop trying: the delivery is failed, keeping `reason`."""

    reason: str


# How far below its configured delay a retry may come back, as a fraction of it.
JITTER: Final = 0.2
# How much of an unforeseen error's text a delivery keeps as its reply.
REPLY_MAX: Final = 500


class RetryPolicy:
    """When a failed delivery is tried again, and when it is given up."""

    def __init__(self, delays: Sequence[float], *, jitter: float = JITTER, rng: random.Random | None = None):
        if not delays:
            raise ValueError("a retry policy needs at least one delay")
        self.delays = tuple(delays)
        self._jitter = jitter
        self._rng = rng or random.Random()

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.retry_delays)

    @property
    def max_attempts(self) -> int:
        """Attempts a delivery gets in all: one more than there are delays."""
        return len(self.delays) + 1

    def next_step(self, attempt: int, error: BaseException) -> Retry | GiveUp:
        """What a delivery whose `attempt` (1 for the first) failed with `error` does next."""
        if isinstance(error, RelayUnavailable):
            return Retry(0.0, 0.0, f"not attempted: {error.reply}", counts=False)
        if isinstance(error, Throttled):
            reply = error.reply if error.code is None else f"{error.code} {error.reply}"
            return Retry(0.0, 0.0, f"throttled, no attempt spent: {reply}", counts=False)
        if isinstance(error, TemporaryDeliveryError):
            if attempt >= self.max_attempts:
                return GiveUp(f"{error.reply} (attempts exhausted: {attempt})")
            base = self.delays[min(attempt, len(self.delays)) - 1]
            return Retry(base * (1 - self._jitter * self._rng.random()), base, error.reply)
        if isinstance(error, DeliveryError):  # permanent: a 5xx reply, a message that cannot be built
            return GiveUp(error.reply)
        # A bug or a value nothing foresaw: trying again would fail the same way.
        return GiveUp(f"internal error: {error.__class__.__name__}: {error}"[:REPLY_MAX])


# Failures of the store or the broker, not of the work itself.
TRANSIENT: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    aio_pika.exceptions.AMQPError,
    # Raised on a channel that a lost connection closed, until it reopens.
    aio_pika.exceptions.ChannelInvalidStateError,
    # Refused, reset or aborted connections, and timeouts.
    ConnectionError,
    TimeoutError,
    # A name that could not be resolved just now.
    socket.gaierror,
)
# Socket errors that say the network is away for now, not that the request is wrong.
TRANSIENT_ERRNOS: Final = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.EADDRNOTAVAIL}
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
    """True when `exc` is the store or the broker being unavailable, not a bad request.

    A relay's answer is never one: what a delivery does after it is `RetryPolicy`'s to say.
    """
    if isinstance(exc, DeliveryError):
        return False
    if isinstance(exc, TRANSIENT):
        return True
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        state = str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or "")
        return state in TRANSIENT_SQLSTATES or state.startswith(TRANSIENT_SQLSTATE_CLASSES)
    return False


class Stopping(Exception):
    """The process is stopping while it waited out an outage; give the work back."""


async def outlast_outages(operation: Callable[[], Awaitable[T]], *, stop: asyncio.Event, what: str) -> T:
    """Run `operation` (calls to the store and the bus) again until no outage stops it.

    Waits with exponential backoff between tries; raises what is not an
    outage (`is_transient`) at once, and `Stopping` once `stop` is set.
    """
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


_RESTART_FIRST, _RESTART_MAX = 1.0, 60.0


def restart_delay(previous: float, ran: float) -> float:
    """Seconds before starting a child again that ran `ran` seconds; `previous` was the last delay.

    A child that keeps dying soon after its start (a relay or database it
    cannot reach, say) is started ever less often, up to once a minute; one
    that ran for a minute starts again after the first delay.
    """
    if ran >= _RESTART_MAX:
        return _RESTART_FIRST
    return min(max(2 * previous, _RESTART_FIRST), _RESTART_MAX)
