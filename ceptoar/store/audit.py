"""The operators' audit log: who did what to which alert, and when. Append-only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ceptoar.store.engine import reading
from ceptoar.store.tables import audit

__all__ = ["AuditEntry", "AuditRepo"]


@dataclass(frozen=True)
class AuditEntry:
    """One operator action."""

    at: datetime
    operator: str
    action: str
    alert_id: str | None
    notice_id: str | None
    detail: dict[str, Any]


class AuditRepo:
    """Writes and reads the audit log; rows are never changed."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def record(
        self,
        operator: str,
        action: str,
        *,
        alert_id: str | None = None,
        notice_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(audit).values(
                    at=datetime.now(UTC),
                    operator=operator,
                    action=action,
                    alert_id=alert_id,
                    notice_id=notice_id,
                    detail=detail or {},
                )
            )

    async def since(self, when: datetime | None = None) -> list[AuditEntry]:
        """Entries at or after `when` (all when None), oldest first."""
        query = select(audit).order_by(audit.c.id)
        if when is not None:
            query = query.where(audit.c.at >= when)
        async with reading(self._engine) as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            AuditEntry(r["at"], r["operator"], r["action"], r["alert_id"], r["notice_id"], dict(r["detail"]))
            for r in rows
        ]
