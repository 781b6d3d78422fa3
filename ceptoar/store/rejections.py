"""Notices the dispatcher refused after they were accepted, with why: what `ceptoar status` shows for them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ceptoar.store.engine import reading
from ceptoar.store.tables import rejections

__all__ = ["Rejection", "RejectionRepo"]


@dataclass(frozen=True)
class Rejection:
    """One refused notice: when, which (as its message named it), why and the field at fault."""

    at: datetime
    source: str | None
    source_id: str | None
    reason: str
    field: str | None


class RejectionRepo:
    """Keeps and finds refused notices."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def record(self, *, message_id: str | None, reason: str, field: str | None) -> None:
        """Keep a refusal; `message_id` is the message's `source:notice-id`, when it had one."""
        source, sep, source_id = (message_id or "").partition(":")
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(rejections).values(
                    at=datetime.now(UTC),
                    source=source[:64] if sep else None,
                    source_id=(source_id if sep else message_id or "")[:128] or None,
                    reason=reason,
                    field=(field or None) and field[:128],
                )
            )

    async def of_notice(self, ident: str) -> list[Rejection]:
        """The refusals of the notice an operator named (`notice-id` or `source:notice-id`), newest first."""
        source, sep, source_id = ident.partition(":")
        which = (
            (rejections.c.source == source) & (rejections.c.source_id == source_id)
            if sep
            else rejections.c.source_id == ident
        )
        return await self._read(select(rejections).where(which))

    async def since(self, when: datetime) -> list[Rejection]:
        """The refusals since `when`, newest first."""
        return await self._read(select(rejections).where(rejections.c.at >= when))

    async def _read(self, query: Select[Any]) -> list[Rejection]:
        async with reading(self._engine) as conn:
            rows = (await conn.execute(query.order_by(rejections.c.id.desc()).limit(1000))).mappings()
            return [
                Rejection(r["at"], r["source"], r["source_id"], r["reason"], r["field"]) for r in rows
            ]
