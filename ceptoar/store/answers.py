"""Organisations' answers to alerts, by reply or by link.

An answer belongs to the organisation: whichever of its addresses answers,
by mail or on the answer page, the organisation has answered. The first
answer moves the delivery it came by from `sent` to `acknowledged` (one
that comes while the delivery is being sent is applied with the send's
outcome, so the send's record is kept); every
answer is kept (append-only), and the latest is the organisation's answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ceptoar.model.answer import Answer
from ceptoar.model.states import DeliveryState, sources
from ceptoar.store.deliveries import transition_events
from ceptoar.store.engine import reading
from ceptoar.store.tables import addresses, alerts, answers, deliveries, delivery_events, subscribers

__all__ = ["AnswerRepo", "AnswerTarget", "Answered", "record_answer"]

# The states an organisation's first answer moves to `acknowledged`. Not `sending`: the attempt's
# outcome is still to be written, and it applies the answer (`DeliveryRepo.record`).
_ANSWERABLE: Final = tuple(s for s in sources(DeliveryState.ACKNOWLEDGED) if s is not DeliveryState.SENDING)

# The delivery an answer link names, with its alert, organisation and the organisation's latest answer;
# built once, as every answer page asks it.
_LATEST: Final = (
    select(answers.c.answer)
    .where(answers.c.alert_id == deliveries.c.alert_id, answers.c.subscriber_code == subscribers.c.code)
    .order_by(answers.c.id.desc())
    .limit(1)
    .scalar_subquery()
)
_TARGET: Final = (
    select(
        deliveries.c.id,
        deliveries.c.attempts,
        deliveries.c.state,
        addresses.c.language,
        deliveries.c.alert_id,
        alerts.c.created_at,
        alerts.c.expires_at,
        subscribers.c.code,
        subscribers.c.name,
        _LATEST.label("latest"),
    )
    .join(alerts, deliveries.c.alert_id == alerts.c.id)
    .join(addresses, deliveries.c.address_id == addresses.c.id)
    .join(subscribers, addresses.c.subscriber_code == subscribers.c.code)
    .where(deliveries.c.id == bindparam("delivery_id"))
)


@dataclass(frozen=True)
class AnswerTarget:
    """The delivery an answer link names, with what its page shows."""

    delivery_id: int
    attempts: int
    state: str
    language: str
    alert_id: str
    alert_created_at: datetime
    alert_expires_at: datetime | None
    subscriber_code: str
    organisation: str
    # The organisation's latest answer to the alert, if it gave one.
    answer: str | None


@dataclass(frozen=True)
class Answered:
    """What recording one answer did."""

    answer: Answer
    # Whether it moved its delivery to `acknowledged` (the organisation's first answer by this delivery).
    acknowledged: bool
    # The organisation's answer before this one.
    previous: str | None


class AnswerRepo:
    """Answers to alerts, per organisation."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def target(self, delivery_id: int) -> AnswerTarget | None:
        """The delivery, alert and organisation an answer link names; None if there is no such delivery."""
        async with reading(self._engine) as conn:
            row = (await conn.execute(_TARGET, {"delivery_id": delivery_id})).first()
        if row is None:
            return None
        return AnswerTarget(
            row.id,
            row.attempts,
            row.state,
            row.language,
            row.alert_id,
            row.created_at,
            row.expires_at,
            row.code,
            row.name,
            row.latest,
        )

    async def record(
        self, target: AnswerTarget, answer: Answer, *, via: str, by: str | None = None
    ) -> Answered:
        """Keep one answer given by `target`'s delivery (its `answer` read as the one before)."""
        async with self._engine.begin() as conn:
            moved = await record_answer(
                conn,
                delivery_id=target.delivery_id,
                attempts=target.attempts,
                alert_id=target.alert_id,
                subscriber_code=target.subscriber_code,
                answer=answer,
                via=via,
                by=by,
                now=datetime.now(UTC),
            )
        return Answered(answer, moved, target.answer)

    async def latest(self, alert_id: str) -> dict[str, str]:
        """Per organisation (its code), its latest answer to an alert."""
        async with reading(self._engine) as conn:
            return await latest_answers(conn, alert_id)


async def record_answer(
    conn: AsyncConnection,
    *,
    delivery_id: int,
    attempts: int,
    alert_id: str,
    subscriber_code: str,
    answer: Answer,
    via: str,
    by: str | None,
    now: datetime,
) -> bool:
    """Keep an answer that came by one delivery at `now`; True if it moved that delivery to `acknowledged`."""
    await conn.execute(
        insert(answers).values(
            at=now,
            delivery_id=delivery_id,
            alert_id=alert_id,
            subscriber_code=subscriber_code,
            answer=answer.value,
            via=via,
            by=by,
        )
    )
    moved = await conn.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id, deliveries.c.state.in_(_ANSWERABLE))
        .values(state=DeliveryState.ACKNOWLEDGED.value, updated_at=now, lease_until=None)
    )
    if moved.rowcount != 1:
        return False
    said = f"answered by {via}: {answer.value}"
    events = transition_events([(delivery_id, attempts)], DeliveryState.ACKNOWLEDGED, now, reply=said)
    await conn.execute(insert(delivery_events), events)
    return True


async def latest_answers(conn: AsyncConnection, alert_id: str) -> dict[str, str]:
    """Per organisation, its latest answer to an alert."""
    query = select(answers.c.subscriber_code, answers.c.answer).where(answers.c.alert_id == alert_id)
    return {code: answer for code, answer in (await conn.execute(query.order_by(answers.c.id))).all()}
