"""Issues of the security mail magazine, and the addresses' choice of it.

An issue is composed as a draft (the editor's articles; its number is
given then, 第N号 per kind), and sent once: sending stores it as an alert
of source `digest` whose deliveries carry it through the same pipeline as
any alert. The alert's notice (source `digest`, id `KIND-PERIOD`) is
unique, so an issue is sent once however many processes or hosts try.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ceptoar.model.alert import AlertView
from ceptoar.model.states import AlertState
from ceptoar.store.alerts import alert_view
from ceptoar.store.audit import Actor, insert_audit
from ceptoar.store.engine import reading
from ceptoar.store.tables import addresses, alerts, digests

__all__ = ["DIGEST_SOURCE", "DigestIssue", "DigestRepo", "IssueSent"]

# The source of the alerts that carry digest issues.
DIGEST_SOURCE = "digest"


class IssueSent(Exception):
    """The issue was sent already: it is no longer a draft to change."""


@dataclass(frozen=True)
class DigestIssue:
    id: int
    kind: str
    period: str
    number: int
    articles: list[dict[str, str]]
    state: str
    composed_at: datetime
    composed_by: str
    sent_at: datetime | None
    alert_id: str | None
    content: dict[str, Any] | None

    @property
    def notice_id(self) -> str:
        """The id of the notice an issue is sent as (source `digest`)."""
        return f"{self.kind}-{self.period}"


def _issue(row: Any) -> DigestIssue:
    return DigestIssue(
        row.id,
        row.kind,
        row.period,
        row.number,
        list(row.articles or []),
        row.state,
        row.composed_at,
        row.composed_by,
        row.sent_at,
        row.alert_id,
        row.content,
    )


class DigestRepo:
    """Digest issues and the addresses that take them."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def compose(
        self, kind: str, period: str, articles: list[dict[str, str]], *, who: Actor
    ) -> DigestIssue:
        """The draft of the period's issue with these articles (a new one numbered next); audited.

        IssueSent when the period's issue went out already."""
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            found = (
                await conn.execute(select(digests).where(digests.c.kind == kind, digests.c.period == period))
            ).first()
            if found is not None and found.state == "sent":
                raise IssueSent(f"the {kind} issue for {period} was sent at {found.sent_at:%Y-%m-%d %H:%M}")
            if found is None:
                number = (
                    await conn.execute(
                        select(func.coalesce(func.max(digests.c.number), 0)).where(digests.c.kind == kind)
                    )
                ).scalar_one() + 1
                await conn.execute(
                    insert(digests).values(
                        kind=kind,
                        period=period,
                        number=number,
                        articles=articles,
                        state="draft",
                        composed_at=now,
                        composed_by=who.operator,
                    )
                )
            else:
                await conn.execute(
                    update(digests)
                    .where(digests.c.id == found.id)
                    .values(articles=articles, composed_at=now, composed_by=who.operator)
                )
            detail = {"kind": kind, "period": period, "articles": [a["title"] for a in articles]}
            await insert_audit(conn, who, "digest-compose", detail=detail)
            row = (
                await conn.execute(select(digests).where(digests.c.kind == kind, digests.c.period == period))
            ).one()
        return _issue(row)

    async def get(self, kind: str, period: str) -> DigestIssue | None:
        async with reading(self._engine) as conn:
            row = (
                await conn.execute(select(digests).where(digests.c.kind == kind, digests.c.period == period))
            ).first()
        return None if row is None else _issue(row)

    async def of_alert(self, alert_id: str) -> DigestIssue | None:
        """The issue an alert of source `digest` carries."""
        async with reading(self._engine) as conn:
            row = (await conn.execute(select(digests).where(digests.c.alert_id == alert_id))).first()
        return None if row is None else _issue(row)

    async def issues(self) -> list[DigestIssue]:
        """Every issue, newest period first."""
        async with reading(self._engine) as conn:
            rows = (
                await conn.execute(select(digests).order_by(digests.c.period.desc(), digests.c.kind))
            ).all()
        return [_issue(r) for r in rows]

    async def items(self, start: datetime, end: datetime) -> list[AlertView]:
        """What an issue for [start, end) lists: the period's actual alerts and updates that went out
        (not held, not cancels, not digests), oldest first."""
        query = (
            select(alerts)
            .where(
                alerts.c.created_at >= start,
                alerts.c.created_at < end,
                alerts.c.status == "actual",
                alerts.c.msg_type.in_(("alert", "update")),
                alerts.c.state != AlertState.HELD.value,
                alerts.c.source != DIGEST_SOURCE,
            )
            .order_by(alerts.c.created_at, alerts.c.id)
        )
        async with reading(self._engine) as conn:
            return [alert_view(r) for r in (await conn.execute(query)).mappings().all()]

    async def mark_sent(
        self, issue: DigestIssue, alert_id: str, content: dict[str, Any], *, who: Actor
    ) -> bool:
        """Record that the issue went out as `alert_id`; False if it was recorded already. Audited."""
        async with self._engine.begin() as conn:
            done = await conn.execute(
                update(digests)
                .where(digests.c.id == issue.id, digests.c.state != "sent")
                .values(state="sent", sent_at=datetime.now(UTC), alert_id=alert_id, content=content)
            )
            if done.rowcount != 1:
                return False
            detail = {
                "kind": issue.kind,
                "period": issue.period,
                "number": issue.number,
                "items": len(content["items"]),
                "addresses": sum(len(v["addresses"]) for v in content["variants"]),
            }
            await insert_audit(
                conn, who, "digest-send", alert_id=alert_id, notice_id=issue.notice_id, detail=detail
            )
        return True

    async def set_choice(self, address_id: int, digest: str, *, who: Actor, why: str) -> str | None:
        """Set an address's digest (none, weekly, monthly); its previous choice, None if no such address.
        Audited with `why`."""
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    select(addresses.c.email, addresses.c.digest, addresses.c.subscriber_code).where(
                        addresses.c.id == address_id
                    )
                )
            ).first()
            if row is None:
                return None
            if row.digest != digest:
                await conn.execute(
                    update(addresses)
                    .where(addresses.c.id == address_id)
                    .values(digest=digest, updated_at=datetime.now(UTC))
                )
                detail = {
                    "organisation": row.subscriber_code,
                    "address": row.email,
                    "digest": [row.digest, digest],
                }
                await insert_audit(conn, who, why, detail=detail)
        return str(row.digest)
