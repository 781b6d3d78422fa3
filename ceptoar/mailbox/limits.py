"""A relay's limits on one sending host, as the mailbox plays them: sessions at once, messages a second.

Over `max_connections` sessions, a new one is greeted `421 4.7.0` and
closed; a message over `rate` in the last second is refused at MAIL with
`451 4.7.1`, in Postfix's words. Nothing else changes: a message within the
limits is handled as before.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["SESSION_REFUSAL", "RelayLimits", "rate_refusal"]

SESSION_REFUSAL = "421 4.7.0 mailbox.ceptoar.example Error: too many connections from {peer}"


def rate_refusal(peer: str) -> str:
    return f"451 4.7.1 Error: too much mail from {peer}"


class RelayLimits:
    """Counts sessions and messages; says whether one more is allowed."""

    def __init__(
        self,
        *,
        max_connections: int | None = None,
        rate: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_connections = max_connections
        self.rate = rate
        self._clock = clock
        self.sessions = 0
        self._taken: deque[float] = deque()
        self.refused_sessions = 0
        self.refused_messages = 0

    def open_session(self) -> bool:
        if self.max_connections is not None and self.sessions >= self.max_connections:
            self.refused_sessions += 1
            return False
        self.sessions += 1
        return True

    def close_session(self) -> None:
        self.sessions -= 1

    def take_message(self) -> bool:
        """True when one more message is within the rate of the last second (and count it)."""
        if self.rate is None:
            return True
        now = self._clock()
        while self._taken and now - self._taken[0] >= 1.0:
            self._taken.popleft()
        if len(self._taken) >= self.rate:
            self.refused_messages += 1
            return False
        self._taken.append(now)
        return True
