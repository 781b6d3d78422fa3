"""The operators' audit log: who did what to which alert, and when. Append-only.

An operator action is written before anything it causes is published, so
nothing an operator sends goes out unrecorded; the dispatcher refuses a
notice in the operators' name that no entry records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ceptoar.store.engine import reading
from ceptoar.store.tables import audit

__all__ = ["Actor", "AuditEntry", "AuditRepo", "insert_audit"]


@dataclass(frozen=True)
class Actor:
    """Who acts: the operator's name, and the account and host the command ran under."""

    operator: str
    os_user: str | None = None
    host: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    """One operator action."""

    at: datetime
    operator: str
    action: str
    alert_id: str | None
    notice_id: str | None
    detail: dict[str, Any]
    os_user: str | None = None
    host: str | None = None


async def insert_audit(
    conn: AsyncConnection,
    who: Actor,
    action: str,
    *,
    alert_id: str | None = None,
    notice_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Write one entry inside the caller's transaction (with the change it records)."""
    await conn.execute(
        insert(audit).values(
            at=datetime.now(UTC),
            operator=who.operator,
            os_user=who.os_user,
            host=who.host,
            action=action,
            alert_id=alert_id,
            notice_id=notice_id,
            detail=detail or {},
        )
    )


class AuditRepo:
    """Writes and reads the audit log; rows are never changed."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def record(
        self,
        who: Actor,
        action: str,
        *,
        alert_id: str | None = None,
        notice_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        async with self._engine.begin() as conn:
            await insert_audit(conn, who, action, alert_id=alert_id, notice_id=notice_id, detail=detail)

    async def records_notice(self, notice_id: str) -> bool:
        """Whether an operator's action published the notice `notice_id`."""
        async with reading(self._engine) as conn:
            found = await conn.execute(select(audit.c.id).where(audit.c.notice_id == notice_id).limit(1))
            return found.first() is not None

    async def since(self, when: datetime | None = None) -> list[AuditEntry]:
        """Entries at or after `when` (all when None), oldest first."""
        query = select(audit).order_by(audit.c.id)
        if when is not None:
            query = query.where(audit.c.at >= when)
        async with reading(self._engine) as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            AuditEntry(
                r["at"],
                r["operator"],
                r["action"],
                r["alert_id"],
                r["notice_id"],
                dict(r["detail"]),
                r["os_user"],
                r["host"],
            )
            for r in rows
        ]
