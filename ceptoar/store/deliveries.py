"""Delivery rows: claiming, recording outcomes, and the append-only event log.

Every transition is one conditional UPDATE whose WHERE names the states it
may leave, and only a row that actually changed gets an event. A job whose
claim changes nothing is a duplicate and must not be sent.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Text,
    and_,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ceptoar.model.escalation import Purpose
from ceptoar.model.states import CLAIMABLE, DeliveryState
from ceptoar.store.audit import Actor, insert_audit
from ceptoar.store.engine import reading
from ceptoar.store.leases import this_process
from ceptoar.store.tables import (
    UtcDateTime,
    addresses,
    alerts,
    answers,
    deliveries,
    delivery_events,
    returned,
    subscribers,
)

__all__ = [
    "Claimed",
    "DeliveryRepo",
    "Outcome",
    "bounce_reply",
    "claim_in",
    "claimable",
    "row_events",
    "transition_events",
]


# A delivery with its address and the organisation it belongs to.
_WITH_RECIPIENT = deliveries.join(addresses, deliveries.c.address_id == addresses.c.id).join(
    subscribers, addresses.c.subscriber_code == subscribers.c.code
)


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker now owns until its lease runs out."""

    id: int
    alert_id: str
    email: str
    message_id: str
    attempt: int
    language: str
    role: str
    org_code: str
    org_name: str
    in_reply_to: str | None = None
    references: str | None = None
    # The organisation's designated security contact (TLP:AMBER+STRICT).
    contact: bool = False
    # What the mail is for: the alert, or a reminder or backup copy (`ceptoar.model.escalation`).
    purpose: str = Purpose.ALERT
    # How the address's mail is encoded (`ceptoar.render`).
    charset: str = "utf-8"
    address_id: int = 0
    # A personalised mail's variant (a digest's selection of items), if it is one.
    variant: int | None = None


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to; `code` and `reply` are the server's words."""

    delivery_id: int
    state: DeliveryState
    attempt: int
    code: int | None
    reply: str
    # When the server answered (recording comes later, a batch at a time).
    at: datetime | None = None
    # False when nothing reached the relay (it could not be reached): the claim is given back.
    counted: bool = True
    # What ceptoar did about this attempt that the relay's reply does not say (the mail went in
    # UTF-8 where ISO-2022-JP was asked): recorded as a `sending` event just before the outcome's.
    note: str | None = None


class DeliveryRepo:
    """Claims deliveries and records what became of them."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def claim(self, ids: Sequence[int], *, lease_seconds: float, max_attempts: int) -> list[Claimed]:
        """Move the claimable ones of `ids` to `sending`; return those this call won.

        A claim is an attempt: a claimable delivery already claimed
        `max_attempts` times (its worker died, or its batch kept failing,
        each time) is `failed` instead, whatever brought its job back.
        """
        if not ids:
            return []
        async with self._engine.begin() as conn:
            won = await _take(conn, ids, lease_seconds=lease_seconds, max_attempts=max_attempts)
        if not won:
            return []
        # Read outside the write transaction: rows this call owns, and the
        # write lock is the store's narrowest point under a fan-out.
        async with reading(self._engine) as conn:
            return await _recipients(conn, won)

    async def record(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        """Apply outcomes to rows still `sending` for that attempt; return those applied.

        An outcome that did not count (the relay could not be reached) gives
        its attempt back, so an outage costs no delivery one of its attempts.
        An organisation that answered by this delivery while it was being sent
        (a link from an earlier copy, a reply) has its answer applied here: a
        sent mail ends `acknowledged`, with its send kept (`sent_at`, code, reply).
        Likewise a bounce that came back before its send was recorded: the
        mail ends `bounced`, its send time and code kept beside the report's words.

        One locked read picks the rows still owned by these attempts, then one
        batched UPDATE and one batched INSERT of events: a row changed
        meanwhile (cancelled, claimed again) is left alone.
        """
        if not outcomes:
            return []
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            owned = {
                (row.id, row.attempts): row.updated_at
                for row in (
                    await conn.execute(
                        select(deliveries.c.id, deliveries.c.attempts, deliveries.c.updated_at)
                        .where(
                            deliveries.c.id.in_([o.delivery_id for o in outcomes]),
                            deliveries.c.state == DeliveryState.SENDING,
                        )
                        .with_for_update()
                    )
                ).all()
            }
            applied = [o for o in outcomes if (o.delivery_id, o.attempt) in owned]
            # Only a mail the relay took can have been answered or bounced meanwhile.
            sent = {
                o.delivery_id: owned[o.delivery_id, o.attempt]  # when it was claimed
                for o in applied
                if o.state is DeliveryState.SENT
            }
            answered, bounced = await _answered_or_bounced_since(conn, sent)
            if applied:
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id == bindparam("b_id"))
                    .values(
                        state=bindparam("b_state"),
                        attempts=deliveries.c.attempts - bindparam("b_refund"),
                        last_code=bindparam("b_code"),
                        last_reply=bindparam("b_reply"),
                        lease_until=None,
                        updated_at=now,
                        sent_at=func.coalesce(
                            bindparam("b_sent_at", type_=UtcDateTime), deliveries.c.sent_at
                        ),
                    ),
                    [_outcome_params(o, now, answered, bounced) for o in applied],
                )
                await _record_events(conn, applied, now, bounced)
                if answered:
                    await row_events(
                        conn,
                        deliveries.c.id.in_(sorted(answered)),
                        DeliveryState.ACKNOWLEDGED,
                        now,
                        reply="answered while it was being sent",
                    )
                if bounced:
                    await _copied_events(conn, deliveries.c.id.in_(sorted(bounced)))
        return applied

    async def expired_leases(self, *, limit: int = 10_000) -> list[tuple[int, str]]:
        """Deliveries left `sending` by a worker that died, with their alert's severity: to be sent again."""
        now = datetime.now(UTC)
        async with reading(self._engine) as conn:
            return [
                (i, severity)
                for i, severity in (
                    await conn.execute(
                        select(deliveries.c.id, alerts.c.severity)
                        .join(alerts, deliveries.c.alert_id == alerts.c.id)
                        .where(deliveries.c.state == DeliveryState.SENDING, deliveries.c.lease_until < now)
                        .order_by(deliveries.c.id)
                        .limit(limit)
                    )
                ).all()
            ]

    async def requeue(
        self,
        alert_id: str,
        *,
        states: Sequence[DeliveryState] = (),
        email: str | None = None,
        why: str,
        audit: tuple[Actor, str, dict[str, Any]] | None = None,
    ) -> list[int]:
        """Put deliveries of an alert back to `queued` for another send; return their ids.

        `states` picks them by state (failed, deferred), `email` the alert's
        own mail to one address (not a reminder or backup copy it was sent
        since) in any state but `sending` and `cancelled`. Each gets an event saying
        why. An operator's resend starts a new series of attempts; `audit`
        (who, action, detail) is written in the same transaction when
        anything was put back, before any job can send it.
        """
        now = datetime.now(UTC)
        query = update(deliveries).where(deliveries.c.alert_id == alert_id)
        if email is not None:
            query = query.where(
                deliveries.c.email == email.lower(),
                deliveries.c.purpose == Purpose.ALERT.value,
                deliveries.c.state.not_in([DeliveryState.SENDING.value, DeliveryState.CANCELLED.value]),
            )
        else:
            query = query.where(deliveries.c.state.in_([s.value for s in states]))
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    query.values(
                        state=DeliveryState.QUEUED.value, attempts=0, lease_until=None, updated_at=now
                    ).returning(deliveries.c.id, deliveries.c.attempts)
                )
            ).all()
            if rows:
                await conn.execute(
                    insert(delivery_events), transition_events(rows, DeliveryState.QUEUED, now, reply=why)
                )
                if audit is not None:
                    who, action, detail = audit
                    await insert_audit(
                        conn, who, action, alert_id=alert_id, detail={**detail, "deliveries": len(rows)}
                    )
        return [i for i, _ in rows]

    async def report(self, alert_id: str) -> list[dict[str, Any]]:
        """One row per recipient of an alert: organisation, address, state, attempts, reply, times.

        Each row also carries its organisation's prefecture and latest answer with its time.
        """
        query = (
            select(
                subscribers.c.code,
                subscribers.c.name,
                subscribers.c.prefecture,
                deliveries.c.email,
                addresses.c.role,
                deliveries.c.state,
                deliveries.c.attempts,
                deliveries.c.last_code,
                deliveries.c.last_reply,
                deliveries.c.created_at,
                deliveries.c.sent_at,
                deliveries.c.updated_at,
            )
            .select_from(_WITH_RECIPIENT)
            .where(deliveries.c.alert_id == alert_id, deliveries.c.purpose == Purpose.ALERT.value)
            .order_by(subscribers.c.code, deliveries.c.id)
        )
        latest = (
            select(answers.c.subscriber_code, answers.c.answer, answers.c.at)
            .where(answers.c.alert_id == alert_id)
            .order_by(answers.c.id)
        )
        async with reading(self._engine) as conn:
            answered = {code: (answer, at) for code, answer, at in (await conn.execute(latest)).all()}
            rows = [dict(r) for r in (await conn.execute(query)).mappings().all()]
        for r in rows:
            r["answer"], r["answered_at"] = answered.get(r["code"], (None, None))
        return rows

    async def timeline(self, alert_id: str) -> list[tuple[datetime, str]]:
        """When each delivery of an alert reached a final state, in order."""
        final = [DeliveryState.SENT.value, DeliveryState.FAILED.value, DeliveryState.CANCELLED.value]
        query = (
            select(delivery_events.c.at, delivery_events.c.state)
            .join(deliveries, delivery_events.c.delivery_id == deliveries.c.id)
            .where(deliveries.c.alert_id == alert_id, delivery_events.c.state.in_(final))
            .order_by(delivery_events.c.at)
        )
        async with reading(self._engine) as conn:
            return [(at, state) for at, state in (await conn.execute(query)).all()]

    async def event_counts(self, alert_id: str) -> dict[tuple[str, int | None], int]:
        """How many events of the alert's deliveries there are of each state and SMTP code.

        A throttling reply that cost no attempt is a `queued` event with the relay's code.
        """
        query = (
            select(delivery_events.c.state, delivery_events.c.smtp_code, func.count())
            .join(deliveries, delivery_events.c.delivery_id == deliveries.c.id)
            .where(deliveries.c.alert_id == alert_id)
            .group_by(delivery_events.c.state, delivery_events.c.smtp_code)
        )
        async with reading(self._engine) as conn:
            return {(state, code): n for state, code, n in (await conn.execute(query)).all()}

    async def stale(
        self, *, queued_before: datetime, deferred_before: datetime, limit: int = 10_000
    ) -> list[tuple[int, str]]:
        """Deliveries waiting longer than any job should take, of alerts whose jobs were published.

        Their job was lost (dead-lettered after repeated failures, say). They
        come with their alert's severity. Their `updated_at` is touched, so
        the next sweep waits as long again.
        """
        waiting = or_(
            and_(deliveries.c.state == DeliveryState.QUEUED, deliveries.c.updated_at < queued_before),
            and_(deliveries.c.state == DeliveryState.DEFERRED, deliveries.c.updated_at < deferred_before),
        )
        async with self._engine.begin() as conn:
            rows = [
                (i, severity)
                for i, severity in (
                    await conn.execute(
                        select(deliveries.c.id, alerts.c.severity)
                        .join(alerts, deliveries.c.alert_id == alerts.c.id)
                        .where(waiting, alerts.c.jobs_published_at.is_not(None))
                        .order_by(deliveries.c.id)
                        .limit(limit)
                    )
                ).all()
            ]
            if rows:
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id.in_([i for i, _ in rows]))
                    .values(updated_at=datetime.now(UTC))
                )
        return rows

    async def get(self, delivery_id: int) -> dict[str, Any] | None:
        async with reading(self._engine) as conn:
            row = (
                (await conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)))
                .mappings()
                .first()
            )
        return None if row is None else dict(row)

    async def find(self, alert_id: str, email: str) -> dict[str, Any] | None:
        """The delivery of an alert to one address (the alert mail, not a reminder or backup copy)."""
        async with reading(self._engine) as conn:
            row = (
                (
                    await conn.execute(
                        select(deliveries).where(
                            deliveries.c.alert_id == alert_id,
                            deliveries.c.email == email.lower(),
                            deliveries.c.purpose == Purpose.ALERT.value,
                        )
                    )
                )
                .mappings()
                .first()
            )
        return None if row is None else dict(row)

    async def events(self, delivery_id: int) -> list[dict[str, Any]]:
        """The event log of one delivery, oldest first."""
        async with reading(self._engine) as conn:
            rows = (
                (
                    await conn.execute(
                        select(delivery_events)
                        .where(delivery_events.c.delivery_id == delivery_id)
                        .order_by(delivery_events.c.id)
                    )
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]


async def _answered_or_bounced_since(
    conn: AsyncConnection, claimed_at: Mapping[int, datetime]
) -> tuple[set[int], dict[int, str]]:
    """Of the deliveries `claimed_at` names, those the organisation answered by since they were claimed,
    and those a bounce came back for (the relay took the mail, and its report came before the send
    was recorded), with what the bounce said; an answer wins over a bounce.

    One indexed read of both (almost always finding nothing), compared here: a subquery per row costs
    a fan-out a fifth of its time on SQLite, and each statement lengthens the write this runs in.
    """
    if not claimed_at:
        return set(), {}
    ids = list(claimed_at)
    query = union_all(
        select(
            answers.c.delivery_id, answers.c.at, literal(None, Text), literal(None, Text), literal(0)
        ).where(answers.c.delivery_id.in_(ids)),
        select(
            returned.c.delivery_id,
            returned.c.received_at,
            returned.c.status,
            returned.c.diagnostic,
            returned.c.id,
        ).where(returned.c.delivery_id.in_(ids), returned.c.kind == "bounce"),
    )
    answered: set[int] = set()
    bounced: dict[int, tuple[int, str]] = {}
    for i, at, status, diagnostic, order in (await conn.execute(query)).all():
        if i is None or at < claimed_at[i]:
            continue
        if not order:
            answered.add(i)
        elif i not in bounced or bounced[i][0] < order:
            bounced[i] = order, bounce_reply(status, diagnostic)
    return answered, {i: why for i, (_, why) in bounced.items() if i not in answered}


def bounce_reply(status: str | None, diagnostic: str | None) -> str:
    """What a bounced delivery keeps as its last reply: the report's status and the server's words."""
    return f"bounced: {status or ''} {diagnostic or ''}".strip()[:2000]


def _outcome_params(
    o: Outcome, now: datetime, answered: Collection[int], bounced: dict[int, str]
) -> dict[str, Any]:
    sent_at = (o.at or now) if o.state is DeliveryState.SENT else None
    state, reply = o.state, o.reply
    if o.delivery_id in answered:
        state = DeliveryState.ACKNOWLEDGED
    elif o.delivery_id in bounced:
        state, reply = DeliveryState.BOUNCED, bounced[o.delivery_id]
    return {
        "b_id": o.delivery_id,
        "b_state": state.value,
        "b_code": o.code,
        "b_reply": reply,
        "b_sent_at": sent_at,
        "b_refund": 0 if o.counted else 1,
    }


async def _record_events(
    conn: AsyncConnection, applied: Sequence[Outcome], now: datetime, bounced: Collection[int] = ()
) -> None:
    """The events of outcomes just applied to their rows.

    A sent row holds all its event says (its reply and when it was
    accepted), so those events are built by the database: a fan-out's
    batch is all sent, and this runs under the write lock.
    """
    notes = [
        {**_event(o, now), "state": DeliveryState.SENDING.value, "smtp_code": None, "smtp_reply": o.note}
        for o in applied
        if o.note
    ]
    if notes:
        await conn.execute(insert(delivery_events), notes)
    # A row bounced meanwhile holds the report's words: its `sent` event is built from the outcome.
    sent = [o.delivery_id for o in applied if o.state is DeliveryState.SENT and o.delivery_id not in bounced]
    if sent:
        # The row may be `acknowledged` already (answered during the send): the event says `sent`.
        sent_state = literal(DeliveryState.SENT.value)
        await _copied_events(conn, deliveries.c.id.in_(sent), at=deliveries.c.sent_at, state=sent_state)
    others = [
        _event(o, now) for o in applied if o.state is not DeliveryState.SENT or o.delivery_id in bounced
    ]
    if others:
        await conn.execute(insert(delivery_events), others)


async def _copied_events(
    conn: AsyncConnection,
    rows: ColumnElement[bool],
    *,
    at: Any = deliveries.c.updated_at,
    state: Any = deliveries.c.state,
) -> None:
    """Log the rows `rows` selects in the state, attempt and reply they now hold, built by the database."""
    await conn.execute(
        insert(delivery_events).from_select(
            ["delivery_id", "at", "state", "attempt", "smtp_code", "smtp_reply"],
            select(
                deliveries.c.id,
                at,
                state,
                deliveries.c.attempts,
                deliveries.c.last_code,
                deliveries.c.last_reply,
            ).where(rows),
        )
    )


def _event(o: Outcome, now: datetime) -> dict[str, Any]:
    return {
        "delivery_id": o.delivery_id,
        "at": o.at or now,
        "state": o.state.value,
        "attempt": o.attempt if o.counted else o.attempt - 1,
        "smtp_code": o.code,
        "smtp_reply": o.reply,
    }


async def claim_in(
    conn: AsyncConnection, ids: Sequence[int], *, lease_seconds: float, max_attempts: int
) -> list[Claimed]:
    """`DeliveryRepo.claim` inside the caller's transaction."""
    won = await _take(conn, ids, lease_seconds=lease_seconds, max_attempts=max_attempts)
    return await _recipients(conn, won) if won else []


def claimable(now: datetime) -> ColumnElement[bool]:
    """Rows not sent and owned by no live worker: queued, deferred, or `sending` past their lease."""
    return or_(
        deliveries.c.state.in_([s.value for s in CLAIMABLE]),
        and_(deliveries.c.state == DeliveryState.SENDING, deliveries.c.lease_until < now),
    )


async def _take(
    conn: AsyncConnection, ids: Sequence[int], *, lease_seconds: float, max_attempts: int
) -> list[int]:
    """Move the claimable ones of `ids` to `sending`, with their events; return those won.

    Those already claimed `max_attempts` times are failed instead (`_exhaust`).
    """
    if not ids:
        return []
    now = datetime.now(UTC)
    lease_until = datetime.fromtimestamp(now.timestamp() + lease_seconds, UTC)
    unsent = claimable(now)
    won = (
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids), unsent, deliveries.c.attempts < max_attempts)
            .values(
                state=DeliveryState.SENDING.value,
                attempts=deliveries.c.attempts + 1,
                lease_until=lease_until,
                holder=str(this_process()),
                updated_at=now,
            )
            .returning(deliveries.c.id)
        )
    ).scalars()
    taken = list(won)
    if taken:
        await row_events(conn, deliveries.c.id.in_(taken), DeliveryState.SENDING, now)
    if len(taken) < len(ids):
        # Only then can one be exhausted (a claim of a fan-out's fresh rows wins them all).
        rest = set(ids).difference(taken)
        await _exhaust(conn, sorted(rest), unsent, max_attempts, now)
    return taken


async def _exhaust(
    conn: AsyncConnection,
    ids: Sequence[int],
    unsent: ColumnElement[bool],
    max_attempts: int,
    now: datetime,
) -> None:
    """Fail the claimable ones of `ids` that were claimed `max_attempts` times already.

    A delivery comes back this often only when no attempt could be
    recorded (its worker died, or its batch failed, each time): sending it
    again and again could flood its address, so it stops here, its last
    reply kept beside the reason.
    """
    spent = (
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids), unsent, deliveries.c.attempts >= max_attempts)
            .values(
                state=DeliveryState.FAILED.value,
                lease_until=None,
                updated_at=now,
                last_reply=literal(
                    f"attempts exhausted: claimed {max_attempts} times without a recorded outcome"
                )
                + func.coalesce(literal("; last reply: ") + deliveries.c.last_reply, literal("")),
            )
            .returning(deliveries.c.id)
        )
    ).scalars()
    failed = list(spent)
    if failed:
        await _copied_events(conn, deliveries.c.id.in_(failed))


async def row_events(
    conn: AsyncConnection,
    rows: ColumnElement[bool],
    state: DeliveryState,
    at: datetime,
    *,
    reply: str | None = None,
) -> None:
    """Log that the delivery rows `rows` select moved to `state` at `at`, each with its attempt.

    Built by the database: such a batch's events differ only in their
    row's id and attempt, and building them runs under the write lock.
    """
    await conn.execute(
        insert(delivery_events).from_select(
            ["delivery_id", "at", "state", "attempt", "smtp_reply"],
            select(
                deliveries.c.id,
                literal(at, UtcDateTime),
                literal(state.value),
                deliveries.c.attempts,
                literal(reply, Text),
            ).where(rows),
        )
    )


async def _recipients(conn: AsyncConnection, ids: Sequence[int]) -> list[Claimed]:
    """The claimed deliveries with what sending them needs of their address and organisation."""
    rows = (
        await conn.execute(
            select(
                deliveries.c.id,
                deliveries.c.alert_id,
                deliveries.c.email,
                deliveries.c.message_id,
                deliveries.c.attempts,
                addresses.c.language,
                addresses.c.role,
                subscribers.c.code,
                subscribers.c.name,
                deliveries.c.in_reply_to,
                deliveries.c.references,
                addresses.c.contact,
                deliveries.c.purpose,
                addresses.c.charset,
                deliveries.c.address_id,
                deliveries.c.variant,
            )
            .select_from(_WITH_RECIPIENT)
            .where(deliveries.c.id.in_(ids))
            .order_by(deliveries.c.id)
        )
    ).all()
    return [Claimed(*row) for row in rows]


def transition_events(
    rows: Iterable[Sequence[int]], state: DeliveryState, at: datetime, *, reply: str | None = None
) -> list[dict[str, Any]]:
    """Event rows for deliveries, given as (id, attempt), that moved to `state` at `at`."""
    return [
        {"delivery_id": row[0], "at": at, "state": state.value, "attempt": row[1], "smtp_reply": reply}
        for row in rows
    ]
