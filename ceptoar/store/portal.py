"""What the portal keeps and reads: operators, sign-in links, sessions, and an organisation's alerts.

Tokens never reach the database: sign-in links and session cookies are
kept as the SHA-256 of their token, so a copy of the database opens no
session. A sign-in link is used by one conditional UPDATE, so two clicks
on it (or two hosts) cannot both sign in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ceptoar.model.alert import AlertView
from ceptoar.model.escalation import Purpose
from ceptoar.store.alerts import alert_view
from ceptoar.store.answers import AnswerRepo, AnswerTarget, latest_answers
from ceptoar.store.audit import Actor, insert_audit
from ceptoar.store.digests import DIGEST_SOURCE
from ceptoar.store.engine import reading
from ceptoar.store.tables import (
    addresses,
    alerts,
    deliveries,
    operators,
    portal_sessions,
    signin_attempts,
    signin_links,
    subscribers,
)

# How long a successful sign-in is remembered, to know an operator's own clients.
_KNOWN_CLIENT_KEPT: Final = timedelta(days=30)

__all__ = ["Address", "Attempts", "Operator", "PortalRepo", "Visitor"]


@dataclass(frozen=True)
class Attempts:
    """Operators' failed sign-ins since a moment, as every API process counts them."""

    # By this name from this client, by any name from this client, and by this name from anywhere.
    pair: int
    client: int
    name: int
    # Whether this client signed in as this name before (within the remembered period).
    known_client: bool


@dataclass(frozen=True)
class Address:
    """A registered address as the portal signs it in and shows its settings."""

    id: int
    email: str
    role: str
    contact: bool
    language: str
    subscriber_code: str
    organisation: str
    prefecture: str
    min_severity: str
    categories: tuple[str, ...]
    digest: str = "none"
    low_notices: str = "auto"


@dataclass(frozen=True)
class Operator:
    name: str
    key_hash: str
    created_at: datetime
    disabled_at: datetime | None


@dataclass(frozen=True)
class Visitor:
    """Who a session cookie belongs to: an address of a local government, or an operator."""

    address: Address | None = None
    operator: str | None = None


_ADDRESS_COLUMNS = (
    addresses.c.id,
    addresses.c.email,
    addresses.c.role,
    addresses.c.contact,
    addresses.c.language,
    addresses.c.subscriber_code,
    subscribers.c.name,
    subscribers.c.prefecture,
    addresses.c.min_severity,
    addresses.c.categories,
    addresses.c.digest,
    addresses.c.low_notices,
)


def _address(row: Any) -> Address:
    return Address(
        row.id,
        row.email,
        row.role,
        bool(row.contact),
        row.language,
        row.subscriber_code,
        row.name,
        row.prefecture,
        row.min_severity,
        tuple(row.categories or ()),
        row.digest,
        row.low_notices,
    )


def _active_addresses() -> Any:
    return (
        select(*_ADDRESS_COLUMNS)
        .join(subscribers, addresses.c.subscriber_code == subscribers.c.code)
        .where(addresses.c.active.is_(True), subscribers.c.active.is_(True))
    )


class PortalRepo:
    """Sign-in, sessions and what one organisation may read."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # --- operators -------------------------------------------------------------------------------

    async def add_operator(self, name: str, key_hash: str, *, who: Actor) -> bool:
        """Create an operator account; False if the name is taken. Audited."""
        async with self._engine.begin() as conn:
            taken = await conn.execute(select(operators.c.name).where(operators.c.name == name))
            if taken.first() is not None:
                return False
            await conn.execute(insert(operators).values(name=name, key_hash=key_hash, created_at=_now()))
            await insert_audit(conn, who, "operator", detail={"added": name})
        return True

    async def set_operator_key(self, name: str, key_hash: str | None, *, who: Actor) -> bool:
        """Give an operator a new key (None: disable the account and end its sessions). Audited."""
        async with self._engine.begin() as conn:
            values: dict[str, Any] = (
                {"disabled_at": _now()} if key_hash is None else {"key_hash": key_hash, "disabled_at": None}
            )
            changed = await conn.execute(update(operators).where(operators.c.name == name).values(**values))
            if changed.rowcount != 1:
                return False
            await conn.execute(delete(portal_sessions).where(portal_sessions.c.operator == name))
            detail = {"disabled": name} if key_hash is None else {"new_key": name}
            await insert_audit(conn, who, "operator", detail=detail)
        return True

    async def operator(self, name: str) -> Operator | None:
        async with reading(self._engine) as conn:
            row = (await conn.execute(select(operators).where(operators.c.name == name))).first()
        return None if row is None else Operator(row.name, row.key_hash, row.created_at, row.disabled_at)

    async def operators(self) -> list[Operator]:
        async with reading(self._engine) as conn:
            rows = (await conn.execute(select(operators).order_by(operators.c.name))).all()
        return [Operator(r.name, r.key_hash, r.created_at, r.disabled_at) for r in rows]

    async def signin_attempts(self, name: str, client: str, *, now: datetime, window: timedelta) -> Attempts:
        """The failed sign-ins within `window` before `now`, and whether `client` signed in as `name` within
        the remembered period: one read."""
        by_name, by_client = signin_attempts.c.name == name, signin_attempts.c.client == client
        failed = signin_attempts.c.ok.is_(False) & (signin_attempts.c.at >= now - window)
        known = (
            signin_attempts.c.ok.is_(True)
            & by_name
            & by_client
            & (signin_attempts.c.at >= now - _KNOWN_CLIENT_KEPT)
        )
        query = select(
            func.count().filter(failed & by_name & by_client),
            func.count().filter(failed & by_client),
            func.count().filter(failed & by_name),
            func.count().filter(known),
        ).where(by_name | by_client)
        async with reading(self._engine) as conn:
            pair, from_client, for_name, signed_in = (await conn.execute(query)).one()
        return Attempts(pair, from_client, for_name, signed_in > 0)

    async def record_signin(
        self, name: str, client: str, *, ok: bool, now: datetime, window: timedelta
    ) -> None:
        """Keep one sign-in attempt; forget failures older than `window`, successes older than the
        remembered period."""
        async with self._engine.begin() as conn:
            await conn.execute(insert(signin_attempts).values(at=now, name=name, client=client, ok=ok))
            await conn.execute(
                delete(signin_attempts).where(
                    signin_attempts.c.at < now - window, signin_attempts.c.ok.is_(False)
                )
            )
            if ok:
                await conn.execute(
                    delete(signin_attempts).where(
                        signin_attempts.c.at < now - _KNOWN_CLIENT_KEPT, signin_attempts.c.name == name
                    )
                )

    # --- sign-in links and sessions -----------------------------------------------------------------

    async def address_by_email(self, email: str) -> Address | None:
        """The active address `email` (compared without case), if registered."""
        query = _active_addresses().where(func.lower(addresses.c.email) == email.strip().lower())
        async with reading(self._engine) as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _address(row)

    async def add_link(
        self, address_id: int, token_hash: str, *, expires_at: datetime, since: datetime, most: int
    ) -> bool:
        """Keep a new sign-in link, unless the address was sent `most` links since `since`."""
        async with self._engine.begin() as conn:
            recent = await conn.execute(
                select(func.count())
                .select_from(signin_links)
                .where(signin_links.c.address_id == address_id, signin_links.c.created_at >= since)
            )
            if (recent.scalar() or 0) >= most:
                return False
            await conn.execute(
                insert(signin_links).values(
                    token_hash=token_hash, address_id=address_id, created_at=_now(), expires_at=expires_at
                )
            )
        return True

    async def use_link(self, token_hash: str) -> Address | None:
        """The address a sign-in link signs in, spending the link; None if unknown, used or expired."""
        now = _now()
        async with self._engine.begin() as conn:
            spent = await conn.execute(
                update(signin_links)
                .where(
                    signin_links.c.token_hash == token_hash,
                    signin_links.c.used_at.is_(None),
                    signin_links.c.expires_at > now,
                )
                .values(used_at=now)
                .returning(signin_links.c.address_id)
            )
            address_id = spent.scalar()
            if address_id is None:
                return None
            row = (await conn.execute(_active_addresses().where(addresses.c.id == address_id))).first()
        return None if row is None else _address(row)

    async def link_state(self, token_hash: str) -> str:
        """`usable`, `used`, `expired` or `unknown`: what a sign-in link's page says, spending nothing."""
        async with reading(self._engine) as conn:
            row = (
                await conn.execute(select(signin_links).where(signin_links.c.token_hash == token_hash))
            ).first()
        if row is None:
            return "unknown"
        if row.used_at is not None:
            return "used"
        return "expired" if row.expires_at <= _now() else "usable"

    async def start_session(
        self,
        token_hash: str,
        *,
        expires_at: datetime,
        address_id: int | None = None,
        operator: str | None = None,
    ) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(portal_sessions).values(
                    token_hash=token_hash,
                    address_id=address_id,
                    operator=operator,
                    created_at=_now(),
                    expires_at=expires_at,
                )
            )

    async def visitor(self, token_hash: str) -> Visitor | None:
        """Who holds a live session; None for an unknown, ended or expired one, or a disabled account."""
        now = _now()
        async with reading(self._engine) as conn:
            found = (
                await conn.execute(
                    select(portal_sessions).where(
                        portal_sessions.c.token_hash == token_hash, portal_sessions.c.expires_at > now
                    )
                )
            ).first()
            if found is None:
                return None
            if found.operator is not None:
                live = await conn.execute(
                    select(operators.c.name).where(
                        operators.c.name == found.operator, operators.c.disabled_at.is_(None)
                    )
                )
                return None if live.first() is None else Visitor(operator=found.operator)
            row = (await conn.execute(_active_addresses().where(addresses.c.id == found.address_id))).first()
        return None if row is None else Visitor(address=_address(row))

    async def end_session(self, token_hash: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(portal_sessions).where(portal_sessions.c.token_hash == token_hash))

    async def forget_expired(self) -> int:
        """Delete expired sessions and sign-in links; how many rows went."""
        now = _now()
        async with self._engine.begin() as conn:
            gone = await conn.execute(delete(portal_sessions).where(portal_sessions.c.expires_at <= now))
            links = await conn.execute(delete(signin_links).where(signin_links.c.expires_at <= now))
        return gone.rowcount + links.rowcount

    # --- an organisation's alerts ---------------------------------------------------------------------

    async def alerts_of(
        self, code: str, *, since: datetime | None = None, until: datetime | None = None, limit: int = 500
    ) -> list[AlertView]:
        """The alerts mailed to organisation `code`, newest first (every TLP: the caller filters; not the
        digest issues, which are newsletters)."""
        query = (
            select(alerts)
            .where(alerts.c.id.in_(_mailed_to(code)), alerts.c.source != DIGEST_SOURCE)
            .order_by(alerts.c.created_at.desc())
            .limit(limit)
        )
        if since is not None:
            query = query.where(alerts.c.created_at >= since)
        if until is not None:
            query = query.where(alerts.c.created_at < until)
        async with reading(self._engine) as conn:
            return [alert_view(r) for r in (await conn.execute(query)).mappings().all()]

    async def thread_of(self, code: str, thread_id: str) -> list[AlertView]:
        """The alerts of one thread that organisation `code` was mailed, oldest first."""
        query = (
            select(alerts)
            .where(alerts.c.thread_id == thread_id, alerts.c.id.in_(_mailed_to(code)))
            .order_by(alerts.c.created_at)
        )
        async with reading(self._engine) as conn:
            return [alert_view(r) for r in (await conn.execute(query)).mappings().all()]

    async def answer_target(self, code: str, alert_id: str, address_id: int) -> AnswerTarget | None:
        """The delivery an organisation's answer on the portal goes by: the signed-in address's own,
        else another of the organisation's; None if the organisation was not mailed the alert."""
        query = (
            select(deliveries.c.id)
            .join(addresses, deliveries.c.address_id == addresses.c.id)
            .where(
                deliveries.c.alert_id == alert_id,
                addresses.c.subscriber_code == code,
                deliveries.c.purpose == Purpose.ALERT.value,
            )
            .order_by((deliveries.c.address_id != address_id), deliveries.c.id)
            .limit(1)
        )
        async with reading(self._engine) as conn:
            delivery_id = (await conn.execute(query)).scalar()
        if delivery_id is None:
            return None
        return await AnswerRepo(self._engine).target(delivery_id)

    async def address_of(self, address_id: int) -> Address | None:
        """The active address with this id."""
        async with reading(self._engine) as conn:
            row = (await conn.execute(_active_addresses().where(addresses.c.id == address_id))).first()
        return None if row is None else _address(row)

    async def addresses_of(self, code: str) -> list[Address]:
        query = _active_addresses().where(addresses.c.subscriber_code == code).order_by(addresses.c.id)
        async with reading(self._engine) as conn:
            return [_address(r) for r in (await conn.execute(query)).all()]

    async def set_subscription(
        self,
        code: str,
        address_id: int,
        *,
        min_severity: str,
        categories: Sequence[str],
        digest: str,
        low_notices: str,
        who: Actor,
    ) -> bool:
        """Change one of organisation `code`'s addresses' subscription; audited with the change."""
        async with self._engine.begin() as conn:
            before = (
                await conn.execute(
                    select(
                        addresses.c.email,
                        addresses.c.min_severity,
                        addresses.c.categories,
                        addresses.c.digest,
                        addresses.c.low_notices,
                    ).where(addresses.c.id == address_id, addresses.c.subscriber_code == code)
                )
            ).first()
            if before is None:
                return False
            values = {
                "min_severity": min_severity,
                "categories": list(categories),
                "digest": digest,
                "low_notices": low_notices,
            }
            await conn.execute(
                update(addresses).where(addresses.c.id == address_id).values(**values, updated_at=_now())
            )
            old = {
                "min_severity": before.min_severity,
                "categories": list(before.categories or ()),
                "digest": before.digest,
                "low_notices": before.low_notices,
            }
            detail = {
                "organisation": code,
                "address": before.email,
                **{k: [old[k], values[k]] for k in values},
            }
            await insert_audit(conn, who, "subscription", detail=detail)
        return True

    # --- what operators watch ---------------------------------------------------------------------

    async def counts_of(self, alert_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Per alert, its own mail's deliveries by state (one query for all of them)."""
        if not alert_ids:
            return {}
        query = (
            select(deliveries.c.alert_id, deliveries.c.state, func.count())
            .where(deliveries.c.alert_id.in_(alert_ids), deliveries.c.purpose == Purpose.ALERT.value)
            .group_by(deliveries.c.alert_id, deliveries.c.state)
        )
        found: dict[str, dict[str, int]] = {a: {} for a in alert_ids}
        async with reading(self._engine) as conn:
            for alert_id, state, n in (await conn.execute(query)).all():
                found[alert_id][state] = n
        return found

    async def prefectures(self, alert_id: str) -> dict[str, tuple[int, int]]:
        """Per prefecture number: (organisations that answered, organisations mailed the alert)."""
        query = (
            select(subscribers.c.code, subscribers.c.prefecture)
            .join(addresses, addresses.c.subscriber_code == subscribers.c.code)
            .join(deliveries, deliveries.c.address_id == addresses.c.id)
            .where(deliveries.c.alert_id == alert_id, deliveries.c.purpose == Purpose.ALERT.value)
            .distinct()
        )
        async with reading(self._engine) as conn:
            mailed = (await conn.execute(query)).all()
            answered = (await latest_answers(conn, alert_id)).keys()
        totals: dict[str, list[int]] = {}
        for code, prefecture in mailed:
            t = totals.setdefault(prefecture, [0, 0])
            t[1] += 1
            t[0] += code in answered
        return {p: (a, n) for p, (a, n) in totals.items()}

    async def returned(self, alert_id: str) -> list[tuple[str, str, str, str, str]]:
        """The alert's bounced and failed deliveries: organisation code, name, address, state and the
        relay's reply."""
        query = (
            select(
                subscribers.c.code,
                subscribers.c.name,
                deliveries.c.email,
                deliveries.c.state,
                deliveries.c.last_reply,
            )
            .join(addresses, deliveries.c.address_id == addresses.c.id)
            .join(subscribers, addresses.c.subscriber_code == subscribers.c.code)
            .where(deliveries.c.alert_id == alert_id, deliveries.c.state.in_(("bounced", "failed")))
            .order_by(subscribers.c.code, deliveries.c.email)
        )
        async with reading(self._engine) as conn:
            rows = (await conn.execute(query)).all()
        return [(r.code, r.name, r.email, r.state, r.last_reply or "") for r in rows]


def _mailed_to(code: str) -> Select[tuple[str]]:
    """The ids of the alerts whose own mail went to an address of organisation `code`."""
    return (
        select(deliveries.c.alert_id)
        .join(addresses, deliveries.c.address_id == addresses.c.id)
        .where(addresses.c.subscriber_code == code, deliveries.c.purpose == Purpose.ALERT.value)
    )


def _now() -> datetime:
    return datetime.now(UTC)
