"""Writing attempts' outcomes as they come, a group at a time.

A mail the relay accepted is a duplicate-in-waiting until its outcome is
stored: should the process die first, its lease lapses and another worker
sends it again. So each outcome is written as soon as it is known, not when
the slowest send of its batch is done: the first outcome of a group waits
at most `window` seconds (`record_window`), and what comes meanwhile, or
while the previous write is under way, goes with it. There is never more
than one write under way per recorder. Each write costs a few milliseconds
of the process's time whatever its size, so the window trades what a dead
process can leave sent but unrecorded (at 0, one mail per SMTP session and
what arrives during one write) against the fan-out's speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from ceptoar.store import Outcome

__all__ = ["Recorder"]


class Recorder:
    """Writes outcomes through `write` (which returns those it applied), a group at a time."""

    def __init__(
        self, write: Callable[[list[Outcome]], Awaitable[Sequence[Outcome]]], *, window: float = 0.0
    ) -> None:
        self._write = write
        self._window = window
        self._pending: list[tuple[Outcome, asyncio.Future[bool]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def record(self, outcome: Outcome) -> bool:
        """Store `outcome` with the next group; True once it is applied, False if its row had moved on."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, done))
        if self._writing is None:
            self._writing = asyncio.create_task(self._drain(), name="mailer-record")
        return await done

    async def _drain(self) -> None:
        try:
            while self._pending:
                if self._window:
                    await asyncio.sleep(self._window)
                group, self._pending = self._pending, []
                try:
                    applied = {id(o) for o in await self._write([o for o, _ in group])}
                except BaseException as exc:  # Stopping, or the store's error: each waiter raises it
                    for _, done in group:
                        if not done.done():
                            done.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for outcome, done in group:
                    if not done.done():
                        done.set_result(id(outcome) in applied)
        finally:
            self._writing = None
