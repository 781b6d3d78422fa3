"""Notices and the alerts made from them, with one delivery row per address."""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, String, and_, case, cast, exists, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ceptoar.errors import UnknownAlert
from ceptoar.model.alert import AlertView
from ceptoar.model.escalation import Purpose
from ceptoar.model.notice import Notice
from ceptoar.model.states import AlertState, DeliveryState
from ceptoar.store.deliveries import Claimed, claim_in, row_events
from ceptoar.store.engine import reading
from ceptoar.store.tables import UtcDateTime, addresses, alerts, deliveries, notices

__all__ = [
    "FIRST_ROWS",
    "Addressee",
    "AlertRepo",
    "Lifecycle",
    "StoredAlert",
    "insert_deliveries",
]


@dataclass(frozen=True)
class StoredAlert:
    """The outcome of storing a notice: a new alert, or the one it duplicates.

    `delivery_ids` are the deliveries whose jobs are still to be published:
    all of a new alert's but those `claimed` when it was stored, or a
    duplicate's still queued when its jobs were never confirmed (empty once
    they were).
    """

    alert_id: str
    delivery_ids: list[int]
    duplicate: bool
    jobs_published: bool
    # The alert's severity, which decides the lane of its jobs.
    severity: str
    # When the stored notice says it was sent (CAP keys a notice by sender, identifier and sent).
    sent: datetime | None = None
    # Deliveries claimed in the storing transaction, for the caller to send itself (no job is published).
    claimed: list[Claimed] = field(default_factory=list)
    # Part of the audience has no delivery rows yet: `AlertRepo.store_pending` writes them.
    pending: bool = False


class Addressee(Protocol):
    """What a delivery row needs of its address."""

    @property
    def address_id(self) -> int: ...


@dataclass(frozen=True)
class Lifecycle:
    """Where a new alert stands: held or not, and which thread it belongs to."""

    state: str = AlertState.ACTIVE
    held_reason: str | None = None
    thread_id: str | None = None
    parent_id: str | None = None


def new_alert_id(now: datetime) -> str:
    """A short, day-sortable alert id such as 20261128-3fa9c2b1."""
    return f"{now:%Y%m%d}-{secrets.token_hex(4)}"


def message_id_for(alert_id: str, address_id: int, domain: str) -> str:
    """The Message-ID every attempt of one delivery carries, so receivers can spot a resend."""
    return f"<{alert_id}.{address_id}@{domain}>"


# Deliveries in an alert's first transaction, and in the first chunk after it, unless told otherwise.
FIRST_ROWS = 500


class AlertRepo:
    """Stores notices and alerts; answers what became of them."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(
        self,
        *,
        notice: Notice,
        payload: str,
        fmt: str,
        severity: str,
        rules: Sequence[str],
        audience: Sequence[int],
        message_id_domain: str,
        lifecycle: Lifecycle = Lifecycle(),
        history: Mapping[int, Sequence[str]] | None = None,
        first: int = 0,
        claim: bool = False,
        lease_seconds: float = 300.0,
        variants: Mapping[int, int] | None = None,
    ) -> StoredAlert:
        """Store notice, alert, a delivery per address id of `audience` and their `queued` events, at once.

        With `first`, the transaction holds only the first `first`
        recipients' deliveries, and the rest of the audience is kept on the
        alert as `pending`, for `store_pending` to write: the first mail of
        a large audience need not wait for all of its rows. With `claim`,
        the deliveries written are also claimed, as `DeliveryRepo.claim`
        would, and returned as `claimed`: the caller sends them without a
        job (if it never does, their lease runs out and the sweeper
        publishes their jobs).

        `variants` gives, per address id, which variant of a personalised mail
        its delivery carries (a digest's selection of items).

        A notice already received (same source and id) stores nothing and
        returns the existing alert marked as a duplicate.
        """
        now = datetime.now(UTC)
        history = history or {}
        written = audience[:first] if first > 0 else audience
        rest = audience[len(written) :]
        try:
            async with self._engine.begin() as conn:
                notice_pk = (
                    await conn.execute(
                        insert(notices)
                        .values(
                            source=notice.source,
                            source_id=notice.id,
                            format=fmt,
                            sent_at=notice.sent,
                            received_at=now,
                            payload=payload,
                        )
                        .returning(notices.c.id)
                    )
                ).scalar_one()
                alert_id = new_alert_id(now)
                view = AlertView.of_notice(
                    notice, severity=severity, rules=rules, id=alert_id, created_at=now
                )
                row = {column: getattr(view, column) for column in _FROM_VIEW}
                row.update(
                    notice_id=notice_pk,
                    state=lifecycle.state,
                    held_reason=lifecycle.held_reason,
                    thread_id=lifecycle.thread_id or alert_id,
                    parent_id=lifecycle.parent_id,
                    pending=_pending(rest, history, message_id_domain) if rest else None,
                )
                await conn.execute(insert(alerts).values(row))
                ids = await insert_deliveries(
                    conn, alert_id, written, history, message_id_domain, now, new=True
                )
                if variants:
                    await _set_variants(conn, alert_id, variants)
                # New rows: none has been attempted, so none can be exhausted.
                claimed = (
                    await claim_in(conn, ids, lease_seconds=lease_seconds, max_attempts=1) if claim else []
                )
        except IntegrityError:
            existing = await self.existing(notice.source, notice.id)
            if existing is None:
                raise
            return existing
        taken = {c.id for c in claimed}
        return StoredAlert(
            alert_id,
            [i for i in ids if i not in taken],
            duplicate=False,
            jobs_published=False,
            severity=severity,
            claimed=claimed,
            pending=bool(rest),
        )

    async def store_pending(
        self, alert_id: str, *, first_chunk: int = FIRST_ROWS
    ) -> AsyncGenerator[list[int]]:
        """Write the deliveries `create` left pending, a transaction per chunk; yield each chunk's new ids.

        Chunks grow from `first_chunk`, so the caller can publish the first
        jobs while the rest are written. A chunk skips addresses that already
        have a row: a writer that died half-way is just run again. The last
        chunk clears `pending`, and then another writer finds nothing to do.
        A cancelled alert's pending addresses get no rows: nothing was sent
        to them, and a cancel goes only to those mailed.
        """
        async with reading(self._engine) as conn:
            pending = (await conn.execute(select(alerts.c.pending).where(alerts.c.id == alert_id))).scalar()
        if not pending:
            return
        threaded = {address_id: message_ids for address_id, message_ids in pending["threaded"]}
        audience = [*pending["fresh"], *threaded]
        start, size = 0, first_chunk
        while start < len(audience):
            last = start + size >= len(audience)
            async with self._engine.begin() as conn:
                state = (
                    await conn.execute(
                        select(alerts.c.state)
                        .where(alerts.c.id == alert_id, alerts.c.pending.is_not(None))
                        .with_for_update()
                    )
                ).scalar()
                if state is None:
                    return  # another writer finished it
                if last or state == AlertState.CANCELLED:
                    await conn.execute(update(alerts).where(alerts.c.id == alert_id).values(pending=None))
                if state == AlertState.CANCELLED:
                    return
                ids = await insert_deliveries(
                    conn,
                    alert_id,
                    audience[start : start + size],
                    threaded,
                    pending["domain"],
                    datetime.now(UTC),
                )
            if ids:
                yield ids
            start, size = start + size, min(2 * size, _INSERT_CHUNK)

    async def existing(self, source: str, source_id: str) -> StoredAlert | None:
        """The alert already made from this notice.

        Its still-queued deliveries are read only when its jobs were never
        confirmed: only then are they published again.
        """
        async with reading(self._engine) as conn:
            row = (
                await conn.execute(
                    select(
                        alerts.c.id,
                        alerts.c.jobs_published_at,
                        alerts.c.severity,
                        alerts.c.pending.is_not(None).label("pending"),
                        notices.c.sent_at,
                    )
                    .join(notices, alerts.c.notice_id == notices.c.id)
                    .where(alerts.c.source == source, alerts.c.source_id == source_id)
                )
            ).first()
        if row is None:
            return None
        published = row.jobs_published_at is not None
        queued = [] if published else await self.queued_delivery_ids(row.id)
        return StoredAlert(
            row.id,
            queued,
            duplicate=True,
            jobs_published=published,
            severity=row.severity,
            sent=row.sent_at,
            pending=bool(row.pending),
        )

    async def queued_delivery_ids(self, alert_id: str) -> list[int]:
        async with reading(self._engine) as conn:
            return list(
                (
                    await conn.execute(
                        select(deliveries.c.id)
                        .where(deliveries.c.alert_id == alert_id, deliveries.c.state == DeliveryState.QUEUED)
                        .order_by(deliveries.c.id)
                    )
                ).scalars()
            )

    async def mark_published(self, alert_id: str) -> None:
        """Record that every delivery job of the alert is confirmed by the broker."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(alerts).where(alerts.c.id == alert_id).values(jobs_published_at=datetime.now(UTC))
            )

    async def unpublished(self, *, older_than: datetime) -> list[tuple[str, str]]:
        """Alerts whose jobs were never confirmed (the dispatcher died in between), with their severity."""
        async with reading(self._engine) as conn:
            rows = await conn.execute(
                select(alerts.c.id, alerts.c.severity).where(
                    alerts.c.jobs_published_at.is_(None), alerts.c.created_at < older_than
                )
            )
            return [(alert_id, severity) for alert_id, severity in rows.all()]

    async def get(self, alert_id: str) -> AlertView | None:
        async with reading(self._engine) as conn:
            row = (await conn.execute(select(alerts).where(alerts.c.id == alert_id))).mappings().first()
        return None if row is None else alert_view(row)

    async def resolve(self, ident: str) -> AlertView:
        """Find an alert by its id, by the notice id, or by `source:notice-id`."""
        found = await self.get(ident)
        if found is not None:
            return found
        query = select(alerts).where(alerts.c.source_id == ident)
        source, sep, source_id = ident.partition(":")
        if sep:
            query = select(alerts).where(
                (alerts.c.source_id == ident)
                | ((alerts.c.source == source) & (alerts.c.source_id == source_id))
            )
        async with reading(self._engine) as conn:
            rows = (await conn.execute(query)).mappings().all()
        if len(rows) == 1:
            return alert_view(rows[0])
        if not rows:
            raise UnknownAlert(ident)
        sources = ", ".join(f"{r['source']}:{r['source_id']}" for r in rows)
        raise UnknownAlert(f"{ident} (ambiguous: {sources})")

    async def find(self, source: str, source_id: str) -> AlertView | None:
        """The alert made from one source's notice."""
        async with reading(self._engine) as conn:
            row = (
                (
                    await conn.execute(
                        select(alerts).where(alerts.c.source == source, alerts.c.source_id == source_id)
                    )
                )
                .mappings()
                .first()
            )
        return None if row is None else alert_view(row)

    async def recent(self, *, since: datetime, severities: Sequence[str] = ()) -> list[AlertView]:
        """Alerts created since `since`, newest first, optionally of some severities only."""
        query = select(alerts).where(alerts.c.created_at >= since).order_by(alerts.c.created_at.desc())
        if severities:
            query = query.where(alerts.c.severity.in_(list(severities)))
        async with reading(self._engine) as conn:
            return [alert_view(r) for r in (await conn.execute(query)).mappings().all()]

    async def settled_since(self, since: datetime) -> list[tuple[str, datetime, datetime, datetime]]:
        """Alerts created since `since` whose mail is all settled: (id, created, first and last mail sent).

        Settled: no delivery of the alert's own mail queued, sending or
        deferred, none left pending; alerts that sent nothing are left out.
        """
        open_states = [DeliveryState.QUEUED.value, DeliveryState.SENDING.value, DeliveryState.DEFERRED.value]
        still_open = func.sum(case((deliveries.c.state.in_(open_states), 1), else_=0))
        first, last = func.min(deliveries.c.sent_at), func.max(deliveries.c.sent_at)  # typed as the column
        mail = and_(deliveries.c.alert_id == alerts.c.id, deliveries.c.purpose == Purpose.ALERT)
        query = (
            select(alerts.c.id, alerts.c.created_at, first, last)
            .join(deliveries, mail)
            .where(alerts.c.created_at >= since, alerts.c.pending.is_(None))
            .group_by(alerts.c.id, alerts.c.created_at)
            .having(and_(still_open == 0, first.is_not(None)))
        )
        async with reading(self._engine) as conn:
            return [(r[0], r[1], r[2], r[3]) for r in (await conn.execute(query)).all()]

    async def counts(self, alert_id: str, *, purpose: str = Purpose.ALERT) -> dict[str, int]:
        """Deliveries of the alert by state; an address still pending (see `create`) counts as queued.

        `purpose`: the alert mail itself, or its reminders or backup copies (`ceptoar.model.escalation`).
        """
        async with reading(self._engine) as conn:
            rows = (
                await conn.execute(
                    select(deliveries.c.state, func.count())
                    .where(deliveries.c.alert_id == alert_id, deliveries.c.purpose == purpose)
                    .group_by(deliveries.c.state)
                )
            ).all()
            if purpose != Purpose.ALERT:
                return {state: n for state, n in rows}
            pending = (await conn.execute(select(alerts.c.pending).where(alerts.c.id == alert_id))).scalar()
        counts = {state: n for state, n in rows}
        if pending:
            waiting = len(pending["fresh"]) + len(pending["threaded"])
            counts[DeliveryState.QUEUED.value] = counts.get(DeliveryState.QUEUED.value, 0) + waiting
        return counts


# The columns of a new alert's row that its view (`AlertView.of_notice`) holds as they are stored.
_FROM_VIEW = (
    "id",
    "source",
    "source_id",
    "msg_type",
    "severity",
    "severity_rules",
    "tlp",
    "title",
    "notice",
    "created_at",
    "status",
    "expires_at",
)

# Addresses per INSERT ... SELECT: well within every database's limit of bound values.
_INSERT_CHUNK = 5000


def _message_id_sql(alert_id: str, domain: str) -> ColumnElement[str]:
    """`message_id_for` computed by the database, for rows built by INSERT ... SELECT."""
    return literal(f"<{alert_id}.") + cast(addresses.c.id, String) + literal(f"@{domain}>")


def _pending(addresses: Sequence[int], history: Mapping[int, Sequence[str]], domain: str) -> dict[str, Any]:
    """The part of an audience whose delivery rows are still to be written, as the alert keeps it."""
    return {
        "domain": domain,
        "fresh": [a for a in addresses if not history.get(a)],
        "threaded": [[a, list(history[a])] for a in addresses if history.get(a)],
    }


async def _set_variants(conn: AsyncConnection, alert_id: str, variants: Mapping[int, int]) -> None:
    by_variant: dict[int, list[int]] = {}
    for address_id, variant in variants.items():
        by_variant.setdefault(variant, []).append(address_id)
    for variant, address_ids in by_variant.items():
        for start in range(0, len(address_ids), _INSERT_CHUNK):
            await conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.alert_id == alert_id,
                    deliveries.c.address_id.in_(address_ids[start : start + _INSERT_CHUNK]),
                )
                .values(variant=variant)
            )


async def insert_deliveries(
    conn: AsyncConnection,
    alert_id: str,
    audience: Sequence[int],
    history: Mapping[int, Sequence[str]],
    domain: str,
    now: datetime,
    *,
    new: bool = False,
) -> list[int]:
    """Insert the audience's deliveries and their `queued` events; return the new delivery ids in order.

    Rows of addresses new to the thread are built by the database from the
    address table (a fan-out to every address writes thousands of rows);
    only threaded rows, which carry earlier Message-IDs, are built here.
    An address that already has a row for the alert is skipped, unless
    `new` says the alert has none yet.
    """
    if not audience:
        return []
    before = 0
    if not new:
        before = (
            await conn.execute(
                select(func.coalesce(func.max(deliveries.c.id), 0)).where(deliveries.c.alert_id == alert_id)
            )
        ).scalar_one()
    fresh = [a for a in audience if not history.get(a)]
    threaded = [a for a in audience if history.get(a)]
    has_row = exists().where(deliveries.c.alert_id == alert_id, deliveries.c.address_id == addresses.c.id)
    if threaded and not new:
        done = await conn.execute(
            select(deliveries.c.address_id).where(
                deliveries.c.alert_id == alert_id, deliveries.c.address_id.in_(threaded)
            )
        )
        written = set(done.scalars())
        threaded = [a for a in threaded if a not in written]
    at = literal(now, UtcDateTime)
    columns = [
        "alert_id",
        "address_id",
        "email",
        "state",
        "attempts",
        "message_id",
        "created_at",
        "updated_at",
    ]
    for start in range(0, len(fresh), _INSERT_CHUNK):
        rows = select(
            literal(alert_id),
            addresses.c.id,
            addresses.c.email,
            literal(DeliveryState.QUEUED.value),
            literal(0),
            _message_id_sql(alert_id, domain),
            at,
            at,
        ).where(addresses.c.id.in_(fresh[start : start + _INSERT_CHUNK]))
        if not new:
            rows = rows.where(~has_row)
        await conn.execute(insert(deliveries).from_select(columns, rows))
    if threaded:
        emails = dict(
            (
                await conn.execute(
                    select(addresses.c.id, addresses.c.email).where(addresses.c.id.in_(threaded))
                )
            ).all()
        )
        await conn.execute(
            insert(deliveries),
            [
                {
                    "alert_id": alert_id,
                    "address_id": a,
                    "email": emails[a],
                    "state": DeliveryState.QUEUED.value,
                    "attempts": 0,
                    "message_id": message_id_for(alert_id, a, domain),
                    "in_reply_to": history[a][-1],
                    "references": " ".join(history[a]),
                    "created_at": now,
                    "updated_at": now,
                }
                for a in threaded
            ],
        )
    mine = and_(deliveries.c.alert_id == alert_id, deliveries.c.id > before)
    await row_events(conn, mine, DeliveryState.QUEUED, now)
    return list((await conn.execute(select(deliveries.c.id).where(mine).order_by(deliveries.c.id))).scalars())


def alert_view(row: Any) -> AlertView:
    """The alert a row of `alerts` (as a mapping) holds."""
    return AlertView(
        id=row["id"],
        source=row["source"],
        source_id=row["source_id"],
        msg_type=row["msg_type"],
        severity=row["severity"],
        severity_rules=list(row["severity_rules"]),
        tlp=row["tlp"],
        title=row["title"],
        notice=dict(row["notice"]),
        created_at=row["created_at"],
        jobs_published_at=row["jobs_published_at"],
        state=row["state"],
        held_reason=row["held_reason"],
        thread_id=row["thread_id"],
        parent_id=row["parent_id"],
        status=row["status"],
        expires_at=row["expires_at"],
        released_by=row["released_by"],
    )

