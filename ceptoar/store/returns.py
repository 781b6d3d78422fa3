"""What came back to the deliveries' return paths, and what it changed.

A permanent bounce moves its delivery from `sent` to `bounced`, with the
status and diagnostic kept as the delivery's last reply and as an event.
The relay had the mail, so a bounce that arrives before the mailer
recorded the send (`sending`), or after it took an ambiguous answer for a
temporary failure (`deferred`), moves it to `bounced` too: the mailer's
late record then finds the row taken, and no retry sends it again. A
bounce for a delivery already `acknowledged` is kept and changes nothing:
somebody read the mail. A delay, an auto-reply, a complaint and a reply
are kept beside their delivery and change no state. What names no delivery
(no return path of ours, a forged or mistyped token, a delivery that does
not exist) is kept as unmatched, with why.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Row, Select, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ceptoar.model.alert import Organisations
from ceptoar.model.answer import Answer
from ceptoar.model.escalation import Purpose
from ceptoar.model.states import DeliveryState, sources
from ceptoar.store.answers import latest_answers, record_answer
from ceptoar.store.deliveries import bounce_reply, transition_events
from ceptoar.store.engine import reading
from ceptoar.store.tables import addresses, answers, deliveries, delivery_events, returned, subscribers

__all__ = ["RETURNED_KEEP", "Bouncing", "Returned", "ReturnedMail", "ReturnsRepo", "Silent"]

# The states a permanent bounce moves to `bounced`: the relay had the mail.
# Not `sending`: a report about an earlier copy is kept beside the delivery, and the attempt under way
# writes its own outcome (a bounce of that one comes later).
_BOUNCEABLE: Final = sources(DeliveryState.BOUNCED)

# Bytes of a returned message that are kept: enough for any DSN and the original's headers.
RETURNED_KEEP: Final = 256 * 1024


@dataclass(frozen=True)
class ReturnedMail:
    """A message that came back, as read (`ceptoar.bounces.report`), for the store to record."""

    kind: str
    delivery_id: int | None
    token_valid: bool | None
    recipient: str | None
    status: str | None
    diagnostic: str | None
    subject: str
    message: bytes
    # A reply's From and the answer it gives.
    sender: str | None = None
    answer: str | None = None
    # What could not be read of the message, if anything.
    problem: str | None = None


@dataclass(frozen=True)
class Silent:
    """An organisation that has not answered an alert: its addresses, where each stands, its last change."""

    code: str
    name: str
    prefecture: str
    addresses: list[str]
    states: list[str]
    last: datetime


@dataclass(frozen=True)
class Bouncing:
    """An address whose mail bounced on each of its last alerts."""

    code: str
    name: str
    email: str
    role: str
    alert_ids: list[str]
    # The latest bounce's status and diagnostic.
    last_reply: str


@dataclass(frozen=True)
class Returned:
    """One kept message and what it did."""

    id: int
    received_at: datetime
    kind: str
    delivery_id: int | None
    matched: bool
    outcome: str
    recipient: str | None
    status: str | None
    diagnostic: str | None
    subject: str
    size: int


class ReturnsRepo:
    """Records returned mail against its delivery."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def record(self, mail: ReturnedMail) -> Returned:
        """Keep one returned message and apply it to its delivery; never raises for its content."""
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            row = None
            if mail.delivery_id is not None and mail.token_valid:
                query = (
                    select(
                        deliveries.c.id,
                        deliveries.c.state,
                        deliveries.c.attempts,
                        deliveries.c.alert_id,
                        addresses.c.subscriber_code,
                    )
                    .join(addresses, deliveries.c.address_id == addresses.c.id)
                    .where(deliveries.c.id == mail.delivery_id)
                )
                row = (await conn.execute(query)).first()
            matched, outcome = row is not None, _unmatched(mail)
            if row is not None and mail.kind == "unknown":
                matched = False
                outcome = (
                    "unmatched: not recognised as a bounce, delay, auto-reply, complaint or reply "
                    f"(for delivery {row.id})"
                )
            elif row is not None and mail.kind == "reply":
                matched, outcome = await _answer(conn, mail, row, now)
            elif row is not None:
                outcome = await _apply(conn, mail, row, now)
            if mail.problem:
                outcome = f"{outcome}; {mail.problem}"
            values: dict[str, Any] = {
                "received_at": now,
                "kind": mail.kind,
                "delivery_id": None if row is None else row.id,
                "matched": matched,
                "outcome": outcome,
                "recipient": mail.recipient,
                "status": mail.status,
                "diagnostic": mail.diagnostic,
                "subject": mail.subject[:300],
                "size": len(mail.message),
                "message": mail.message[:RETURNED_KEEP],
            }
            kept = await conn.execute(insert(returned).values(values).returning(returned.c.id))
            new_id = kept.scalar_one()
        return _view({**values, "id": new_id})

    async def unmatched(self, *, limit: int = 100) -> list[Returned]:
        """The latest messages that named no delivery, newest first."""
        query = (
            select(returned).where(returned.c.matched.is_(False)).order_by(returned.c.id.desc()).limit(limit)
        )
        async with reading(self._engine) as conn:
            return [_view(dict(r)) for r in (await conn.execute(query)).mappings()]

    async def organisations(self, alert_id: str) -> Organisations:
        """How an alert's organisations stand: answered (by latest answer), bounced, silent."""
        async with reading(self._engine) as conn:
            codes = set((await conn.execute(_codes(alert_id))).scalars())
            bounced = set((await conn.execute(_codes(alert_id, DeliveryState.BOUNCED))).scalars())
            latest = await latest_answers(conn, alert_id)
        by_answer = Counter(latest.values())
        return Organisations(
            total=len(codes),
            answered=len(latest),
            by_answer=dict(sorted(by_answer.items())),
            bounced=len(bounced),
            silent=len(codes - latest.keys()),
        )

    async def silent(self, alert_id: str, *, first: int | None = None) -> list[Silent]:
        """The alert's organisations with no answer yet, by code: who to call (the `first` of them)."""
        answered = select(answers.c.subscriber_code).where(answers.c.alert_id == alert_id)
        unanswered = [
            deliveries.c.alert_id == alert_id,
            deliveries.c.purpose == Purpose.ALERT.value,
            subscribers.c.code.not_in(answered),
        ]
        mailed = deliveries.join(addresses, deliveries.c.address_id == addresses.c.id).join(
            subscribers, addresses.c.subscriber_code == subscribers.c.code
        )
        query = (
            select(
                subscribers.c.code,
                subscribers.c.name,
                subscribers.c.prefecture,
                deliveries.c.email,
                deliveries.c.state,
                deliveries.c.updated_at,
            )
            .select_from(mailed)
            .where(*unanswered)
            .order_by(subscribers.c.code, deliveries.c.id)
        )
        if first is not None:
            codes = select(subscribers.c.code).select_from(mailed).where(*unanswered).distinct()
            query = query.where(subscribers.c.code.in_(codes.order_by(subscribers.c.code).limit(first)))
        async with reading(self._engine) as conn:
            rows = (await conn.execute(query)).all()
        by_code: dict[str, list[Any]] = {}
        for r in rows:
            by_code.setdefault(r.code, []).append(r)
        return [
            Silent(
                code,
                theirs[0].name,
                theirs[0].prefecture,
                [r.email for r in theirs],
                [r.state for r in theirs],
                max(r.updated_at for r in theirs),
            )
            for code, theirs in by_code.items()
        ]

    async def bouncing(self, *, last: int = 3) -> list[Bouncing]:
        """Addresses whose mail bounced on each of their last `last` alerts (and that had as many).

        Nothing is switched off: an organisation's only address must not go silent without an
        operator's decision.
        """
        recent = (
            select(
                deliveries.c.address_id,
                deliveries.c.state,
                deliveries.c.alert_id,
                deliveries.c.last_reply,
                func.row_number()
                .over(partition_by=deliveries.c.address_id, order_by=deliveries.c.id.desc())
                .label("n"),
            )
            .where(deliveries.c.state.not_in([DeliveryState.CANCELLED]))
            .subquery()
        )
        query = (
            select(
                addresses.c.subscriber_code,
                subscribers.c.name,
                addresses.c.email,
                addresses.c.role,
                recent.c.state,
                recent.c.alert_id,
                recent.c.last_reply,
            )
            .join(addresses, recent.c.address_id == addresses.c.id)
            .join(subscribers, addresses.c.subscriber_code == subscribers.c.code)
            .where(recent.c.n <= last)
            .order_by(addresses.c.subscriber_code, addresses.c.email, recent.c.n)
        )
        by_address: dict[str, list[Any]] = {}
        async with reading(self._engine) as conn:
            for r in (await conn.execute(query)).all():
                by_address.setdefault(r.email, []).append(r)
        return [
            Bouncing(
                rows[0].subscriber_code,
                rows[0].name,
                email,
                rows[0].role,
                [r.alert_id for r in rows],
                rows[0].last_reply or "",
            )
            for email, rows in by_address.items()
            if len(rows) == last and all(r.state == DeliveryState.BOUNCED for r in rows)
        ]

    async def of_delivery(self, delivery_id: int) -> list[Returned]:
        """What came back for one delivery, oldest first."""
        query = select(returned).where(returned.c.delivery_id == delivery_id).order_by(returned.c.id)
        async with reading(self._engine) as conn:
            return [_view(dict(r)) for r in (await conn.execute(query)).mappings()]


async def _apply(
    conn: AsyncConnection, mail: ReturnedMail, row: Row[Any, Any, Any, Any, Any], now: datetime
) -> str:
    """What a matched message does to its delivery, said as the outcome kept with it."""
    if mail.kind == "bounce" and row.state in _BOUNCEABLE:
        said = bounce_reply(mail.status, mail.diagnostic)
        moved = await conn.execute(
            update(deliveries)
            .where(deliveries.c.id == row.id, deliveries.c.state == row.state)
            .values(state=DeliveryState.BOUNCED.value, last_reply=said, updated_at=now, lease_until=None)
        )
        if moved.rowcount == 1:
            events = transition_events([(row.id, row.attempts)], DeliveryState.BOUNCED, now, reply=said)
            await conn.execute(insert(delivery_events), events)
            return f"bounce: delivery {row.id} {row.state} → bounced"
    if mail.kind == "bounce" and row.state == DeliveryState.ACKNOWLEDGED:
        return f"bounce: kept; delivery {row.id} stays acknowledged (its mail was read)"
    if mail.kind == "bounce" and row.state == DeliveryState.SENDING:
        return f"bounce: kept; delivery {row.id} is bounced when its send is recorded"
    return f"{mail.kind}: kept beside delivery {row.id} ({row.state})"


async def _answer(
    conn: AsyncConnection, mail: ReturnedMail, row: Row[Any, Any, Any, Any, Any], now: datetime
) -> tuple[bool, str]:
    """A reply from one of the organisation's addresses is its answer; from anyone else it matches nothing.

    The first answer moves the delivery to `acknowledged`; later ones update the organisation's answer.
    """
    theirs = select(addresses.c.id).where(
        addresses.c.subscriber_code == row.subscriber_code,
        func.lower(addresses.c.email) == (mail.sender or ""),
    )
    if (await conn.execute(theirs)).first() is None:
        return False, (
            f"unmatched: a reply from {mail.sender or 'no address'}, which is not an address of "
            f"organisation {row.subscriber_code} (delivery {row.id})"
        )
    answer = Answer(mail.answer) if mail.answer else Answer.RECEIVED
    moved = await record_answer(
        conn,
        delivery_id=row.id,
        attempts=row.attempts,
        alert_id=row.alert_id,
        subscriber_code=row.subscriber_code,
        answer=answer,
        via="mail",
        by=mail.sender,
        now=now,
    )
    if moved:
        return True, f"reply: {answer}; delivery {row.id} {row.state} → acknowledged"
    return True, f"reply: {answer}; organisation {row.subscriber_code}'s answer updated"


def _codes(alert_id: str, state: DeliveryState | None = None) -> Select[tuple[str]]:
    query = (
        select(addresses.c.subscriber_code)
        .distinct()
        .join(deliveries, deliveries.c.address_id == addresses.c.id)
        .where(deliveries.c.alert_id == alert_id)
    )
    return query if state is None else query.where(deliveries.c.state == state)


def _unmatched(mail: ReturnedMail) -> str:
    if mail.delivery_id is None and mail.token_valid is None:
        return "unmatched: no return path of ceptoar's in the envelope or the headers"
    if not mail.token_valid:
        return "unmatched: a return path whose token does not verify (forged or mistyped)"
    return f"unmatched: no delivery {mail.delivery_id}"


def _view(row: dict[str, Any]) -> Returned:
    return Returned(**{f.name: row[f.name] for f in dataclasses.fields(Returned)})
