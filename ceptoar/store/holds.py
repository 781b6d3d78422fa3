"""Held alerts: an operator releases one, to an audience the operator chose.

An alert is held when it must not be fanned out on its own (TLP:RED, a
reference that could not be found). Releasing it writes its deliveries and
the operator's audit entry in one transaction, before any job can send
them; its jobs are then published like a new alert's (the sweeper
publishes them if the releasing command dies first).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from ceptoar.errors import CeptoarError
from ceptoar.model.states import AlertState
from ceptoar.store.alerts import Addressee, insert_deliveries
from ceptoar.store.audit import Actor, insert_audit
from ceptoar.store.tables import alerts

__all__ = ["HoldRepo", "NotHeld"]


class NotHeld(CeptoarError, ValueError):
    """The alert is not held (any more): another operator may have released it."""


class HoldRepo:
    """Releases held alerts."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def release(
        self,
        alert_id: str,
        *,
        recipients: Sequence[Addressee],
        message_id_domain: str,
        who: Actor,
        detail: dict[str, Any],
    ) -> list[int]:
        """Make a held alert active with one delivery per recipient, audited; return the delivery ids."""
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            taken = await conn.execute(
                update(alerts)
                .where(alerts.c.id == alert_id, alerts.c.state == AlertState.HELD)
                .values(
                    state=AlertState.ACTIVE, released_by=who.operator, released_at=now, jobs_published_at=None
                )
            )
            if taken.rowcount != 1:
                raise NotHeld(f"alert {alert_id} is not held; nothing was released")
            ids = await insert_deliveries(
                conn, alert_id, [r.address_id for r in recipients], {}, message_id_domain, now, new=True
            )
            detail = {**detail, "deliveries": len(ids)}
            await insert_audit(conn, who, "release", alert_id=alert_id, detail=detail)
        return ids
