"""Subscribers (local governments) and their addresses; who an alert goes to."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import RowMapping, Text, cast, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ceptoar.model.codes import is_prefecture, prefecture_of
from ceptoar.model.subscriber import Candidate
from ceptoar.registry import RegistryRow
from ceptoar.store.engine import reading
from ceptoar.store.tables import addresses, subscribers

__all__ = ["CANDIDATE_CHUNK", "ImportResult", "RegistryCounts", "SubscriberRepo"]

# Addresses read at a time when an audience is chosen; a registry of at most this many is kept in memory.
CANDIDATE_CHUNK = 5000

# An address's subscription, in the order Candidate and RegistryRow hold it.
_SUBSCRIPTION = (
    addresses.c.min_severity,
    addresses.c.categories,
    addresses.c.prefectures,
    addresses.c.wants_tests,
    addresses.c.contact,
)


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
        # The last candidates read, with the registry version they were read at.
        self._candidates: tuple[tuple[Any, ...], list[Candidate]] | None = None

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
        existing = {
            code: (name, active)
            for code, name, active in (
                await conn.execute(select(subscribers.c.code, subscribers.c.name, subscribers.c.active))
            ).all()
        }
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
            # A name that changed, or an organisation a replacing import had dropped and this one lists.
            if code in existing and existing[code] != (name, True):
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
                *_SUBSCRIPTION,
                addresses.c.charset,
                addresses.c.digest,
                addresses.c.low_notices,
            )
            .join(addresses, addresses.c.subscriber_code == subscribers.c.code)
            .where(subscribers.c.active, addresses.c.active)
            .order_by(subscribers.c.code, addresses.c.id)
        )
        async with reading(self._engine) as conn:
            rows = (await conn.execute(query)).all()
        return [
            RegistryRow(
                r[0], r[1], r[2], r[3], r[4], r[5], tuple(r[6]), tuple(r[7]), bool(r[8]), bool(r[9]), r[10],
                r[11], r[12],
            )
            for r in rows
        ]

    async def counts(self) -> RegistryCounts:
        """Active organisations and addresses."""
        async with reading(self._engine) as conn:
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
        async with reading(self._engine) as conn:
            found = set(
                (
                    await conn.execute(
                        select(subscribers.c.code).where(subscribers.c.code.in_(codes), subscribers.c.active)
                    )
                ).scalars()
            )
        return [c for c in codes if c not in found]

    async def candidates(self) -> list[Candidate]:
        """Every active address of an active subscriber, in address order (see `candidate_chunks`)."""
        found: list[Candidate] = []
        async with aclosing(self.candidate_chunks()) as chunks:
            async for chunk in chunks:
                found.extend(chunk)
        return found

    async def candidate_chunks(self, size: int = CANDIDATE_CHUNK) -> AsyncGenerator[list[Candidate]]:
        """Every active address of an active subscriber, in address order, `size` at a time.

        The rows are read by one query through a cursor, a chunk at a time,
        so a caller that keeps only what it needs of each chunk needs memory
        for one chunk, however large the registry. A registry that fits in
        one chunk is kept, and read again only when it changed since the
        last read (any process's change: every write sets `updated_at`, a
        new row changes the count): a fan-out to every address should not
        wait for thousands of rows that are the same as an alert ago.
        Close the generator (`contextlib.aclosing`) if you stop early: it
        holds a connection while it is open.
        """
        async with reading(self._engine) as conn:
            version: tuple[Any, ...] = ()
            for table in (addresses, subscribers):
                version += tuple(
                    (await conn.execute(select(func.count(), func.max(table.c.updated_at)))).one()
                )
            if self._candidates is not None and self._candidates[0] == version:
                cached = self._candidates[1]
            else:
                self._candidates = None
                kept: list[Candidate] | None = []
                result = await conn.stream(_CANDIDATES)
                async for rows in result.partitions(size):
                    chunk = [
                        Candidate(
                            r[0], r[1], r[2], r[3], r[4], r[5], r[6], _codes(r[7]), _codes(r[8]), bool(r[9]),
                            bool(r[10]), r[11], r[12],
                        )
                        for r in rows
                    ]  # fmt: skip
                    if kept is not None:
                        kept = [*kept, *chunk] if len(kept) + len(chunk) <= size else None
                    yield chunk
                if kept is not None:
                    self._candidates = (version, kept)
                return
        for start in range(0, len(cached), size):
            yield cached[start : start + size]


_CANDIDATES = (
    select(
        addresses.c.id,
        addresses.c.email,
        subscribers.c.code,
        subscribers.c.prefecture,
        addresses.c.role,
        addresses.c.language,
        addresses.c.min_severity,
        # As text, decoded by `_codes`: thousands of addresses share a handful of lists.
        cast(addresses.c.categories, Text),
        cast(addresses.c.prefectures, Text),
        addresses.c.wants_tests,
        addresses.c.contact,
        addresses.c.digest,
        addresses.c.low_notices,
    )
    .join(subscribers, addresses.c.subscriber_code == subscribers.c.code)
    .where(addresses.c.active, subscribers.c.active)
    .order_by(addresses.c.id)
)


@lru_cache(maxsize=1024)
def _codes(text: str) -> tuple[str, ...]:
    """A JSON list of categories or prefecture codes, as stored."""
    return tuple(json.loads(text))


def _address_values(row: RegistryRow, now: datetime) -> dict[str, object]:
    return {
        "subscriber_code": row.code,
        "email": row.email,
        "role": row.role,
        "language": row.language,
        "min_severity": row.min_severity,
        "categories": list(row.categories),
        "prefectures": list(row.prefectures),
        "wants_tests": row.tests,
        "contact": row.contact,
        "charset": row.charset,
        "digest": row.digest,
        "low_notices": row.low,
        "active": True,
        "updated_at": now,
    }


def _differs(row: RegistryRow, current: RowMapping) -> bool:
    wanted = _address_values(row, current["updated_at"])
    return any(current[key] != value for key, value in wanted.items() if key != "updated_at")
