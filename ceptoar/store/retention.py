"""Retention: what may be deleted once it is old, and what never is.

The HTTP endpoint's receipts, the delivery event log and the messages that
came back to the return paths grow with every notice, every attempt and
every bounce; past a retention period an operator prunes them. Alerts,
their deliveries (which keep each one's final state and reply), notices,
the organisations' answers and the audit log are never pruned. A prune is itself audited, in
the same transaction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ceptoar.store.audit import Actor, insert_audit
from ceptoar.store.engine import reading
from ceptoar.store.tables import delivery_events, receipts, returned

__all__ = ["Pruned", "RetentionRepo"]


@dataclass(frozen=True)
class Pruned:
    """How many rows a prune removed (or, as a dry run, would remove)."""

    delivery_events: int
    receipts: int
    returned: int = 0


def _old(before: datetime) -> tuple[ColumnElement[bool], ColumnElement[bool], ColumnElement[bool]]:
    """Delivery events from before `before`, receipts from before it that are settled, returned mail."""
    settled = (receipts.c.received_at < before) & (receipts.c.state != "publishing")
    return delivery_events.c.at < before, settled, returned.c.received_at < before


class RetentionRepo:
    """Prunes what is kept for a while only."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def count(self, *, before: datetime) -> Pruned:
        """What `prune` would remove."""
        old_events, old_receipts, old_returned = _old(before)
        async with reading(self._engine) as conn:
            events = (await conn.execute(select(func.count()).where(old_events))).scalar_one()
            settled = (await conn.execute(select(func.count()).where(old_receipts))).scalar_one()
            kept = (await conn.execute(select(func.count()).where(old_returned))).scalar_one()
        return Pruned(int(events), int(settled), int(kept))

    async def prune(self, *, before: datetime, who: Actor) -> Pruned:
        """Delete delivery events, settled receipts and returned mail from before `before`, audited."""
        old_events, old_receipts, old_returned = _old(before)
        async with self._engine.begin() as conn:
            events = await conn.execute(delete(delivery_events).where(old_events))
            settled = await conn.execute(delete(receipts).where(old_receipts))
            kept = await conn.execute(delete(returned).where(old_returned))
            pruned = Pruned(events.rowcount, settled.rowcount, kept.rowcount)
            detail = {"before": before.isoformat(), **asdict(pruned)}
            await insert_audit(conn, who, "prune", detail=detail)
        return pruned
