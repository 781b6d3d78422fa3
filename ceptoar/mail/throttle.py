"""The sending rate towards one relay, shared by every mailer process of the host.

A real relay limits each sending host and answers `421`, `451 4.7.1 too
much mail`, `452 too many connections` and the like when pushed. Such a
reply says nothing about the recipient: the mailer sends that delivery
again without spending an attempt (`ceptoar.retry`), and the window here
slows down.

The window is additive-increase, multiplicative-decrease on messages per
second: every accepted message raises the rate a little (`STEP_SHARE` of
the rate last refused, per second of sending), and a throttling reply
lowers it to `DECREASE` of what the relay took in the last second, at most
once per `HOLD` seconds (the refusals of one burst are one signal). Until
the relay first pushes back, and when no cap is configured
(`CEPTOAR_SMTP_MAX_RATE`), sends are not paced at all.

Sends are paced by one next-free time: each send reserves the next slot
`1 / rate` after the last one. The state lives in a small file in the
host's shared memory (`/dev/shm/ceptoar-UID/`, else under the temporary
directory), one per relay, read and written under an `fcntl` lock, so every
mailer process on the host keeps to one rate together. If that file cannot
be used, the window is the process's own (and says so in the log). A
process adds the messages it sent to the shared counts every `FLUSH`
seconds, and while the window is not paced it looks at it as often: a
fan-out at full speed takes the lock a few times a second, not twice a
message.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import re
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from ceptoar.log import get_logger

__all__ = ["DECREASE", "FLUSH", "HOLD", "MIN_RATE", "STALE", "STEP_SHARE", "SendWindow", "is_throttling"]

log = get_logger(__name__)

# The share of what the relay took in the last second that a throttling reply leaves.
DECREASE: Final = 0.9
# Seconds after a decrease in which further throttling replies do not decrease again.
HOLD: Final = 1.0
# The rate never goes below this many messages a second.
MIN_RATE: Final = 1.0
# Messages per second the rate grows by, per second of sending, as a share of the rate last refused.
STEP_SHARE: Final = 0.03

# rate (0: not paced), ceiling (the rate last refused), next free send time,
# last decrease, start of the current one-second bucket, accepted in it, accepted in the one before.
_LAYOUT: Final = struct.Struct("<7d")

# Wording with which relays refuse for rate or concurrency, not for the recipient.
_THROTTLE_WORDS: Final = re.compile(
    r"rate|too (?:much|many|fast|frequent)|concurren|throttl|slow down|limit (?:exceeded|reached)|"
    r"connection limit|congest",
    re.IGNORECASE,
)
# Enhanced status codes that name the receiving system's load: not accepting messages, congestion.
_THROTTLE_STATUS: Final = re.compile(r"\b4\.(?:3\.2|4\.5)\b")
# A window nobody has sent through for this long starts again from the rate last refused.
STALE: Final = 300.0
# Seconds a process keeps its count of accepted messages, and its view of an unpaced window, to itself.
FLUSH: Final = 0.05


def is_throttling(code: int, message: str) -> bool:
    """True when a relay's reply refuses for load or rate, so no attempt should be spent on it.

    421 (the service closes the session) and 454 always are; 450, 451 and
    452 are when their text speaks of rate, concurrency or congestion.
    Anything about the recipient (a full mailbox, an unknown user) is not.
    """
    if code in (421, 454):
        return True
    if code in (450, 451, 452):
        return bool(_THROTTLE_WORDS.search(message) or _THROTTLE_STATUS.search(message))
    return False


class SendWindow:
    """How fast one host sends to one relay: pacing, growth on acceptance, decrease on throttling."""

    def __init__(
        self,
        relay: str,
        *,
        max_rate: float | None,
        shared: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.relay = relay
        self.max_rate = max_rate
        self._clock = clock
        self._local = bytearray(_LAYOUT.size)
        self._map: mmap.mmap | None = None
        self._fd: int | None = None
        # Messages accepted since the counts were last added to the window, and when that was.
        self._unflushed = 0
        self._flushed_at = -FLUSH
        # Until then, the window was not paced when last looked at: sends need not look again.
        self._unpaced_until = 0.0
        # The file the host's processes share the window through; None while it is this process's own.
        self.path: Path | None = None
        if shared:
            try:
                self._open(_state_path(relay))
            except OSError as exc:
                log.warning("window.not_shared", relay=relay, error=str(exc))
        with self._locked() as state:
            if not state[0] and max_rate:  # a fresh window starts at the cap
                state[0] = max_rate
                self._write(state)

    def _open(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _LAYOUT.size:
                os.ftruncate(fd, _LAYOUT.size)
            self._map = mmap.mmap(fd, _LAYOUT.size)
            # Held while the window is open (beside the lockf locks of each update): the last one
            # to close it sees no other holder and removes the file.
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self.path = path

    def close(self) -> None:
        """Let go of the window; the last process of the host to hold it removes its file."""
        if self._unflushed and self._map is not None:
            self._flush(self._clock())
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # another process still sends through it
            else:
                if self.path is not None:
                    self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    @property
    def shared(self) -> bool:
        return self._map is not None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[float]]:
        if self._fd is None:
            yield list(_LAYOUT.unpack_from(self._local))
            return
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            assert self._map is not None
            yield list(_LAYOUT.unpack_from(self._map))
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _write(self, state: list[float]) -> None:
        _LAYOUT.pack_into(self._map if self._map is not None else self._local, 0, *state)

    @property
    def rate(self) -> float | None:
        """Messages per second the host keeps to now; None while sends are not paced."""
        with self._locked() as state:
            return state[0] or None

    def _fresh(self, state: list[float], now: float) -> bool:
        """Forget a window left idle for `STALE` seconds (the relay's limits may have changed); True if so."""
        if state[4] and now - max(state[2], state[3], state[4]) > STALE:
            state[:] = [state[1] or self.max_rate or 0.0, state[1], now, 0.0, now, 0.0, 0.0]
            return True
        return False

    def reserve(self) -> float:
        """Take the next send slot; seconds to wait before sending (0 when not paced)."""
        now = self._clock()
        if now < self._unpaced_until:
            return 0.0
        with self._locked() as state:
            forgotten = self._fresh(state, now)
            rate = state[0]
            if not rate:
                if forgotten:
                    self._write(state)
                self._unpaced_until = now + FLUSH
                return 0.0
            at = max(now, state[2])
            state[2] = at + 1.0 / rate
            self._write(state)
            return at - now

    def accepted(self) -> None:
        """The relay took a message: count it, and let the rate grow towards the cap (every `FLUSH` s)."""
        self._unflushed += 1
        now = self._clock()
        if now - self._flushed_at >= FLUSH:
            self._flush(now)

    def _flush(self, now: float) -> None:
        with self._locked() as state:
            self._add_accepted(state, now)
            self._write(state)

    def _add_accepted(self, state: list[float], now: float) -> None:
        """Add the messages accepted since the last flush to the counts, and grow the rate for each."""
        self._fresh(state, now)
        _count(state, now, accepted=self._unflushed)
        if state[0]:
            for _ in range(self._unflushed):
                state[0] += max(STEP_SHARE * state[1], MIN_RATE) / state[0]
            if self.max_rate:
                state[0] = min(state[0], self.max_rate)
        self._unflushed = 0
        self._flushed_at = now

    def throttled(self) -> float | None:
        """The relay refused for load: slow down (once per `HOLD`); the new rate, None if unchanged."""
        self._unpaced_until = 0.0
        with self._locked() as state:
            now = self._clock()
            self._add_accepted(state, now)
            if now - state[3] < HOLD:
                self._write(state)
                return None
            took = _last_second(state, now)
            paced = state[0] or took
            state[1] = paced
            state[0] = max(MIN_RATE, DECREASE * min(paced, took or paced))
            state[3] = now
            state[2] = max(state[2], now)
            self._write(state)
            log.warning("relay.throttled", relay=self.relay, rate=round(state[0], 1), took=round(took, 1))
            return state[0]


def _count(state: list[float], now: float, *, accepted: int = 1) -> None:
    """Add to the one-second buckets of accepted messages."""
    if now - state[4] >= 2.0:
        state[4], state[5], state[6] = now, 0.0, 0.0
    elif now - state[4] >= 1.0:
        state[4], state[6], state[5] = state[4] + 1.0, state[5], 0.0
    state[5] += accepted


def _last_second(state: list[float], now: float) -> float:
    """About how many messages the relay took in the second before `now` (a sliding window)."""
    into = min(max(now - state[4], 0.0), 1.0)
    return state[5] + state[6] * (1.0 - into)


def _state_path(relay: str) -> Path:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    directory = base / f"ceptoar-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory / f"window-{re.sub(r'[^A-Za-z0-9.-]', '_', relay)}"
