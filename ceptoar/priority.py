"""Holding back bulk work in a process while something urgent is under way.

A critical batch being sent, or a notice being dispatched, holds the gate;
a bulk mailer loop waits for it to open before it claims its next batch, so
the urgent work has the process's CPU, its database connection and the SMTP
connections to itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["BulkGate"]


class BulkGate:
    """Open while nothing urgent is in hand; any number of holders at once."""

    def __init__(self) -> None:
        self._holders = 0
        self._open = asyncio.Event()
        self._open.set()

    @asynccontextmanager
    async def holding(self) -> AsyncIterator[None]:
        """Keep bulk work waiting while the block runs."""
        self._holders += 1
        self._open.clear()
        try:
            yield
        finally:
            self._holders -= 1
            if not self._holders:
                self._open.set()

    async def opened(self) -> None:
        """Wait until no holder is left (at once when none is)."""
        await self._open.wait()
