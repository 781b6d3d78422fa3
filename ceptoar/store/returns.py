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

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ceptoar.model.states import DeliveryState
from ceptoar.store.deliveries import transition_events
from ceptoar.store.engine import reading
from ceptoar.store.tables import deliveries, delivery_events, returned

__all__ = ["RETURNED_KEEP", "Returned", "ReturnedMail", "ReturnsRepo"]

# The states a permanent bounce moves to `bounced`: the relay had the mail.
_BOUNCEABLE: Final = (DeliveryState.SENT, DeliveryState.SENDING, DeliveryState.DEFERRED)

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
                query = select(deliveries.c.id, deliveries.c.state, deliveries.c.attempts).where(
                    deliveries.c.id == mail.delivery_id
                )
                row = (await conn.execute(query)).first()
            outcome = _unmatched(mail) if row is None else await _apply(conn, mail, row, now)
            values: dict[str, Any] = {
                "received_at": now,
                "kind": mail.kind,
                "delivery_id": None if row is None else row.id,
                "matched": row is not None,
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

    async def of_delivery(self, delivery_id: int) -> list[Returned]:
        """What came back for one delivery, oldest first."""
        query = select(returned).where(returned.c.delivery_id == delivery_id).order_by(returned.c.id)
        async with reading(self._engine) as conn:
            return [_view(dict(r)) for r in (await conn.execute(query)).mappings()]


async def _apply(conn: AsyncConnection, mail: ReturnedMail, row: Row[Any, Any, Any], now: datetime) -> str:
    """What a matched message does to its delivery, said as the outcome kept with it."""
    if mail.kind == "bounce" and row.state in _BOUNCEABLE:
        said = f"bounced: {mail.status or ''} {mail.diagnostic or ''}".strip()[:2000]
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
    return f"{mail.kind}: kept beside delivery {row.id} ({row.state})"


def _unmatched(mail: ReturnedMail) -> str:
    if mail.delivery_id is None and mail.token_valid is None:
        return "unmatched: no return path of ceptoar's in the envelope or the headers"
    if not mail.token_valid:
        return "unmatched: a return path whose token does not verify (forged or mistyped)"
    return f"unmatched: no delivery {mail.delivery_id}"


def _view(row: dict[str, Any]) -> Returned:
    return Returned(
        id=row["id"],
        received_at=row["received_at"],
        kind=row["kind"],
        delivery_id=row["delivery_id"],
        matched=row["matched"],
        outcome=row["outcome"],
        recipient=row["recipient"],
        status=row["status"],
        diagnostic=row["diagnostic"],
        subject=row["subject"],
        size=row["size"],
    )
