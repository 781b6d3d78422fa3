"""An alert's thread: the alert, its updates and its cancel, and what each address got of it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ceptoar.model.states import MAILED, AlertState, DeliveryState
from ceptoar.store.deliveries import claimable, transition_events
from ceptoar.store.engine import reading
from ceptoar.store.tables import alerts, deliveries, delivery_events

__all__ = ["ThreadRepo"]


class ThreadRepo:
    """Questions and changes that span every alert of one thread."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def history(self, thread_id: str) -> dict[int, list[str]]:
        """Per address, the Message-IDs it was sent (or is being sent) in a thread, oldest first."""
        query = (
            select(deliveries.c.address_id, deliveries.c.message_id)
            .join(alerts, deliveries.c.alert_id == alerts.c.id)
            .where(alerts.c.thread_id == thread_id, deliveries.c.state.in_([*MAILED, DeliveryState.SENDING]))
            .order_by(alerts.c.created_at, deliveries.c.id)
        )
        history: dict[int, list[str]] = {}
        async with reading(self._engine) as conn:
            for address_id, message_id in (await conn.execute(query)).all():
                history.setdefault(address_id, []).append(message_id)
        return history

    async def members(self, thread_id: str) -> set[int]:
        """Addresses with any delivery, sent or still to be sent, in a thread."""
        query = (
            select(deliveries.c.address_id)
            .join(alerts, deliveries.c.alert_id == alerts.c.id)
            .where(alerts.c.thread_id == thread_id, deliveries.c.state != DeliveryState.CANCELLED)
        )
        async with reading(self._engine) as conn:
            return set((await conn.execute(query)).scalars())

    async def cancel(self, thread_id: str) -> int:
        """Mark a thread's alerts cancelled and each of its unsent deliveries `cancelled`.

        A `sending` delivery whose lease ran out is unsent too: its worker is
        gone, and the sweeper must not send it after the cancel.
        """
        now = datetime.now(UTC)
        unsent = claimable(now)
        async with self._engine.begin() as conn:
            ids = list(
                (await conn.execute(select(alerts.c.id).where(alerts.c.thread_id == thread_id))).scalars()
            )
            await conn.execute(update(alerts).where(alerts.c.id.in_(ids)).values(state=AlertState.CANCELLED))
            cancelled = (
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.alert_id.in_(ids), unsent)
                    .values(state=DeliveryState.CANCELLED.value, lease_until=None, updated_at=now)
                    .returning(deliveries.c.id, deliveries.c.attempts)
                )
            ).all()
            if cancelled:
                why = "alert cancelled before this delivery was sent"
                await conn.execute(
                    insert(delivery_events),
                    transition_events(cancelled, DeliveryState.CANCELLED, now, reply=why),
                )
        return len(cancelled)

    async def unsent(self, thread_id: str) -> int:
        """Deliveries of a thread not yet sent: those `cancel` would stop now."""
        query = (
            select(func.count())
            .select_from(deliveries.join(alerts, deliveries.c.alert_id == alerts.c.id))
            .where(alerts.c.thread_id == thread_id, claimable(datetime.now(UTC)))
        )
        async with reading(self._engine) as conn:
            return int((await conn.execute(query)).scalar_one())

    async def in_flight(self, thread_id: str) -> int:
        """Deliveries of a thread a worker is sending right now."""
        query = (
            select(func.count())
            .select_from(deliveries.join(alerts, deliveries.c.alert_id == alerts.c.id))
            .where(alerts.c.thread_id == thread_id, deliveries.c.state == DeliveryState.SENDING)
        )
        async with reading(self._engine) as conn:
            return int((await conn.execute(query)).scalar_one())
