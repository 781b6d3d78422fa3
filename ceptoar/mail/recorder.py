"""Writing attempts' outcomes as they come, a group at a time.

A mail the relay accepted is a duplicate-in-waiting until its outcome is
stored: should the process die first, its lease lapses and another worker
sends it again. So each outcome is written as soon as it is known, not when
the slowest send of its batch is done. Outcomes that arrive while a write
is under way go together in the next one (a group commit): under load the
writes grow, idle they are single, and there is never more than one write
under way per recorder.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from ceptoar.store import Outcome

__all__ = ["Recorder"]


class Recorder:
    """Writes outcomes through `write` (which returns those it applied), a group at a time."""

    def __init__(self, write: Callable[[list[Outcome]], Awaitable[Sequence[Outcome]]]) -> None:
        self._write = write
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
