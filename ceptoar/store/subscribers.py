"""Subscribers (local governments) and their addresses; who an alert goes to."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ceptoar.registry import RegistryRow, is_prefecture, prefecture_of
from ceptoar.store.tables import addresses, subscribers

__all__ = ["ImportResult", "Recipient", "RegistryCounts", "SubscriberRepo"]


@dataclass(frozen=True)
class Recipient:
    """One address an alert is to be mailed to."""

    address_id: int
    email: str
    code: str
    role: str


@dataclass(frozen=True)
class RegistryCounts:
    """What the store holds: organisations by kind, addresses by role."""

    prefectures: int
    municipalities: int
    addresses: int
    by_role: dict[str, int] = field(default_factory=dict)

    @property
    def organisations(self) -> int:
        return self.prefectures + self.municipalities


@dataclass(frozen=True)
class ImportResult:
    """What an import changed."""

    organisations_added: int
    addresses_added: int
    addresses_updated: int
    addresses_deactivated: int


class SubscriberRepo:
    """Reads and writes the subscriber registry."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def import_rows(self, rows: Sequence[RegistryRow], *, replace: bool = False) -> ImportResult:
        """Upsert the rows in one transaction; with `replace`, deactivate what the file lacks."""
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            orgs_added = await self._upsert_organisations(conn, rows, now)
            known = {r.email: r for r in (await conn.execute(select(addresses))).mappings().all()}
            new = [r for r in rows if r.email not in known]
            changed = [r for r in rows if r.email in known and _differs(r, known[r.email])]
            if new:
                await conn.execute(insert(addresses), [_address_values(r, now) for r in new])
            for r in changed:
                await conn.execute(
                    update(addresses).where(addresses.c.email == r.email).values(_address_values(r, now))
                )
            deactivated = 0
            if replace:
                listed = {r.email for r in rows}
                gone = [e for e, a in known.items() if e not in listed and a["active"]]
                for email in gone:
                    await conn.execute(
                        update(addresses)
                        .where(addresses.c.email == email)
                        .values(active=False, updated_at=now)
                    )
                deactivated = len(gone)
                codes = {r.code for r in rows}
                await conn.execute(
                    update(subscribers)
                    .where(subscribers.c.code.not_in(codes))
                    .values(active=False, updated_at=now)
                )
        return ImportResult(orgs_added, len(new), len(changed), deactivated)

    @staticmethod
    async def _upsert_organisations(conn: AsyncConnection, rows: Sequence[RegistryRow], now: datetime) -> int:
        names = {r.code: r.name for r in rows}
        existing = dict((await conn.execute(select(subscribers.c.code, subscribers.c.name))).all())
        added = [c for c in names if c not in existing]
        if added:
            await conn.execute(
                insert(subscribers),
                [
                    {
                        "code": c,
                        "name": names[c],
                        "prefecture": prefecture_of(c),
                        "active": True,
                        "updated_at": now,
                    }
                    for c in added
                ],
            )
        for code, name in names.items():
            if code in existing and existing[code] != name:
                await conn.execute(
                    update(subscribers)
                    .where(subscribers.c.code == code)
                    .values(name=name, active=True, updated_at=now)
                )
        return len(added)

    async def export_rows(self) -> list[RegistryRow]:
        """Every active address, in code order, as registry rows."""
        query = (
            select(
                subscribers.c.code,
                subscribers.c.name,
                addresses.c.email,
                addresses.c.role,
                addresses.c.language,
            )
            .join(addresses, addresses.c.subscriber_code == subscribers.c.code)
            .where(subscribers.c.active, addresses.c.active)
            .order_by(subscribers.c.code, addresses.c.id)
        )
        async with self._engine.connect() as conn:
            return [RegistryRow(*row) for row in (await conn.execute(query)).all()]

    async def counts(self) -> RegistryCounts:
        """Active organisations and addresses."""
        async with self._engine.connect() as conn:
            codes = (
                (await conn.execute(select(subscribers.c.code).where(subscribers.c.active))).scalars().all()
            )
            roles = (
                await conn.execute(
                    select(addresses.c.role, func.count())
                    .join(subscribers, addresses.c.subscriber_code == subscribers.c.code)
                    .where(addresses.c.active, subscribers.c.active)
                    .group_by(addresses.c.role)
                )
            ).all()
        prefectures = sum(1 for c in codes if is_prefecture(c))
        by_role = Counter({role: n for role, n in roles})
        return RegistryCounts(prefectures, len(codes) - prefectures, by_role.total(), dict(by_role))

    async def unknown_codes(self, area: Sequence[str]) -> list[str]:
        """The six-digit codes in `area` that are no active subscriber."""
        codes = [c for c in area if len(c) == 6]
        if not codes:
            return []
        async with self._engine.connect() as conn:
            found = set(
                (
                    await conn.execute(
                        select(subscribers.c.code).where(subscribers.c.code.in_(codes), subscribers.c.active)
                    )
                ).scalars()
            )
        return [c for c in codes if c not in found]

    async def audience(self, area: Sequence[str]) -> list[Recipient]:
        """Active addresses of active subscribers in `area` (empty: everyone).

        A two-digit entry is a prefecture number and takes in the prefecture
        and all its municipalities; a six-digit entry is one organisation.
        """
        query = (
            select(addresses.c.id, addresses.c.email, subscribers.c.code, addresses.c.role)
            .join(subscribers, addresses.c.subscriber_code == subscribers.c.code)
            .where(addresses.c.active, subscribers.c.active)
            .order_by(addresses.c.id)
        )
        if area:
            prefs = [c for c in area if len(c) == 2]
            codes = [c for c in area if len(c) == 6]
            query = query.where(or_(subscribers.c.prefecture.in_(prefs), subscribers.c.code.in_(codes)))
        async with self._engine.connect() as conn:
            return [Recipient(*row) for row in (await conn.execute(query)).all()]


def _address_values(row: RegistryRow, now: datetime) -> dict[str, object]:
    return {
        "subscriber_code": row.code,
        "email": row.email,
        "role": row.role,
        "language": row.language,
        "active": True,
        "updated_at": now,
    }


def _differs(row: RegistryRow, current: object) -> bool:
    cur = dict(current)  # type: ignore[call-overload]
    return (
        cur["subscriber_code"] != row.code
        or cur["role"] != row.role
        or cur["language"] != row.language
        or not cur["active"]
    )
