"""Who holds a claimed delivery, and keeping the claim alive while its holder works.

A claim names its holder: the host, the process id and the process's start
time, so that a pid the system has since given to another process is not
taken for the holder. The holder renews the leases of the deliveries it has
in hand several times per lease (`heartbeat`), so the lease can be short
without running out under a slow relay: a holder that dies stops renewing,
and any host's sweeper has its mail sent again as soon as the lease lapses.
A starting `serve`, and each sweep, ends at once the leases held by a
process of its own host that no longer exists (`lapse_dead_holders`).
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ceptoar.model.states import DeliveryState
from ceptoar.store.engine import reading
from ceptoar.store.tables import deliveries

__all__ = ["Holder", "LeaseRepo", "heartbeat", "identify", "this_process"]

# How many times per lease a holder renews it: a holder stalled for a few heartbeats keeps its claims.
_BEATS_PER_LEASE = 6


def heartbeat(lease_seconds: float) -> float:
    """Seconds between a holder's renewals of its leases."""
    return lease_seconds / _BEATS_PER_LEASE


@dataclass(frozen=True)
class Holder:
    """One process that claims deliveries: host, pid and the pid's start time (clock ticks since boot)."""

    host: str
    pid: int
    started: int

    def __str__(self) -> str:
        return f"{self.host}/{self.pid}/{self.started}"

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        """The holder a claim names; None for a text that names none."""
        host, _, rest = text.rpartition("/")
        host, _, pid = host.rpartition("/")
        if not host or not pid.isdigit() or not rest.isdigit():
            return None
        return cls(host, int(pid), int(rest))

    def alive(self) -> bool:
        """Whether this process still runs (asked on its own host: another host's processes are not seen)."""
        return _start_time(self.pid) == self.started


_node: list[str] = []


def identify(node_name: str | None) -> None:
    """Name this process's host in its claims (`node_name` setting) instead of the system's host name.

    Processes that share a host name but not a process table (containers
    given one name) must each be told a name of their own.
    """
    _node[:] = [node_name] if node_name else []
    this_process.cache_clear()


@functools.cache
def this_process() -> Holder:
    """The holder this process's claims name."""
    host = _node[0] if _node else socket.gethostname()
    return Holder(host[:200], os.getpid(), _start_time(os.getpid()) or 0)


def _start_time(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (`/proc/PID/stat` field 22); None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return None
    # Fields after the command's closing parenthesis start at the third (state).
    return int(fields[19]) if len(fields) > 19 else None


class LeaseRepo:
    """Renews the leases of live holders and ends those of dead ones."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def renew(self, ids: Collection[int], *, lease_seconds: float, holder: Holder | None = None) -> int:
        """Extend the leases of `ids` still `sending` under `holder` (this process); how many it extended."""
        if not ids:
            return 0
        who = str(holder or this_process())
        until = datetime.now(UTC) + timedelta(seconds=lease_seconds)
        async with self._engine.begin() as conn:
            moved = await conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.id.in_(list(ids)),
                    deliveries.c.state == DeliveryState.SENDING.value,
                    deliveries.c.holder == who,
                )
                .values(lease_until=until)
            )
        return int(moved.rowcount or 0)

    async def lapse_dead_holders(self, host: str | None = None) -> dict[str, int]:
        """End now the leases held by processes of `host` (this one) that no longer run; per holder, how many.

        A lease ended here is as one that ran out: the sweep publishes its job
        again and the claim decides who sends it.
        """
        host = host or this_process().host
        query = (
            select(deliveries.c.holder)
            .where(deliveries.c.state == DeliveryState.SENDING.value, deliveries.c.holder.like(f"{host}/%"))
            .distinct()
        )
        async with reading(self._engine) as conn:
            holders = [h for h in (await conn.execute(query)).scalars() if h is not None]
        dead = [h for h in holders if (parsed := Holder.parse(h)) is not None and not parsed.alive()]
        if not dead:
            return {}
        lapsed = datetime.now(UTC) - timedelta(seconds=1)
        ended: dict[str, int] = {}
        async with self._engine.begin() as conn:
            for holder in dead:
                moved = await conn.execute(
                    update(deliveries)
                    .where(
                        deliveries.c.state == DeliveryState.SENDING.value,
                        deliveries.c.holder == holder,
                        deliveries.c.lease_until > lapsed,
                    )
                    .values(lease_until=lapsed)
                )
                ended[holder] = int(moved.rowcount or 0)
        return ended
