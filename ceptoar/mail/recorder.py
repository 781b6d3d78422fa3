"""Writing attempts' outcomes as they come, a group at a time.

A mail the relay accepted is a duplicate-in-waiting until its outcome is
stored: should the process die first, its lease lapses and another worker
sends it again. So each outcome is written as soon as it is known, not when
the slowest send of its batch is done: the first outcome of a group waits
at most `window` seconds (`record_window`), or until its batch has no send
left (`hurry`), and what comes meanwhile, or while the previous write is
under way, goes with it. There is never more
than one write under way per recorder. Each write costs a few milliseconds
of the process's time whatever its size, so the window trades what a dead
process can leave sent but unrecorded (at 0, one mail per SMTP session and
what arrives during one write) against the fan-out's speed.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        # Set when nothing more is coming soon: the group is written without waiting out the window.
        self._hurry = asyncio.Event()

    def hurry(self) -> None:
        """Write what is pending now: the batch it belongs to has no send left to wait for."""
        self._hurry.set()

    def submit(self, outcome: Outcome) -> asyncio.Future[bool]:
        """Store `outcome` with the next group: the future is True once it is applied, False if its row
        had moved on."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, done))
        if self._writing is None:
            self._writing = asyncio.create_task(self._drain(), name="mailer-record")
        return done

    async def _drain(self) -> None:
        try:
            while self._pending:
                if self._window and not self._hurry.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._hurry.wait(), self._window)
                self._hurry.clear()
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
