"""Escalations: each silent organisation's reminder, backup copies and call listing, once each.

An organisation is silent when none of its addresses has answered the alert
(`ceptoar.store.answers`). Escalating it at the `reminded` step queues a
reminder for each of its addresses whose alert mail was sent (threaded
under that mail) and the alert for each of its active backup addresses
that TLP lets have it and that did not have it already (a backup address
subscribed to critical alerts only, say, hears of a high one this way);
the `call` step queues nothing and lists it. The
step's row is written with `INSERT ... ON CONFLICT DO NOTHING` under a
unique (alert, organisation, step), in the same transaction as the mail it
queues: of several processes escalating at once, one writes each
organisation's step and its mail, the others nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Insert, Table, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ceptoar.model.alert import AlertView
from ceptoar.model.escalation import Purpose, Step
from ceptoar.model.states import AlertState, DeliveryState
from ceptoar.model.subscriber import Role
from ceptoar.model.tlp import tlp_withholds
from ceptoar.store.alerts import alert_view
from ceptoar.store.answers import latest_answers
from ceptoar.store.audit import Actor, insert_audit
from ceptoar.store.deliveries import transition_events
from ceptoar.store.digests import DIGEST_SOURCE
from ceptoar.store.engine import reading
from ceptoar.store.tables import addresses, alerts, deliveries, delivery_events, escalations, subscribers

__all__ = ["Escalated", "EscalationRepo", "Listed"]


@dataclass
class Escalated:
    """One organisation escalated at one step (or, in a dry run, that would be)."""

    code: str
    name: str
    prefecture: str
    # Addresses that get a reminder, and backup addresses that get the alert.
    reminders: list[str] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)
    # The deliveries queued for them (none in a dry run).
    delivery_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Listed:
    """A step an organisation was escalated at, and whether it has answered since."""

    code: str
    name: str
    prefecture: str
    step: str
    at: datetime
    by: str
    deliveries: int
    answer: str | None
    addresses: list[str]


class EscalationRepo:
    """Escalation steps per alert and organisation."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def candidates(self, *, severities: Sequence[str], since: datetime) -> list[AlertView]:
        """Active alerts (not cancels, not expired, not digest issues: a newsletter asks no answer) of these
        severities made since `since`."""
        now = datetime.now(UTC)
        query = (
            select(alerts)
            .where(
                alerts.c.severity.in_(list(severities)),
                alerts.c.state == AlertState.ACTIVE.value,
                alerts.c.msg_type != "cancel",
                alerts.c.source != DIGEST_SOURCE,
                alerts.c.created_at >= since,
                (alerts.c.expires_at.is_(None)) | (alerts.c.expires_at > now),
            )
            .order_by(alerts.c.created_at)
        )
        async with reading(self._engine) as conn:
            return [alert_view(row) for row in (await conn.execute(query)).mappings()]

    async def escalate(
        self,
        alert: AlertView,
        step: Step,
        *,
        by: str,
        domain: str,
        dry_run: bool = False,
        audit: Actor | None = None,
    ) -> list[Escalated]:
        """Escalate the alert's silent organisations not yet at `step`; return those this call escalated.

        `dry_run` writes nothing and returns who would be. `audit`: the operator escalating by hand,
        written in the same transaction as the mail it queues.
        """
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            plans, mail = await _plan(conn, alert, step, domain=domain, now=now)
            if dry_run or not plans:
                return list(plans.values())
            values = [
                {
                    "alert_id": alert.id,
                    "subscriber_code": code,
                    "step": step.value,
                    "at": now,
                    "by": by,
                    "deliveries": len(p.reminders) + len(p.backups),
                }
                for code, p in plans.items()
            ]
            won = list(
                (
                    await conn.execute(
                        _insert_ignoring_duplicates(conn, escalations)
                        .values(values)
                        .returning(escalations.c.subscriber_code)
                    )
                ).scalars()
            )
            escalated = [plans[code] for code in sorted(won)]
            await _queue_mail(conn, escalated, mail, now=now)
            if audit is not None and escalated:
                detail = {"step": step.value, "organisations": len(escalated)}
                await insert_audit(conn, audit, "escalate", alert_id=alert.id, detail=detail)
        return escalated

    async def listed(self, alert_id: str, step: Step | None = None) -> list[Listed]:
        """The alert's escalations, by organisation code, with each organisation's answer since."""
        query = (
            select(
                escalations.c.subscriber_code,
                subscribers.c.name,
                subscribers.c.prefecture,
                escalations.c.step,
                escalations.c.at,
                escalations.c.by,
                escalations.c.deliveries,
            )
            .join(subscribers, escalations.c.subscriber_code == subscribers.c.code)
            .where(escalations.c.alert_id == alert_id)
            .order_by(escalations.c.subscriber_code, escalations.c.id)
        )
        if step is not None:
            query = query.where(escalations.c.step == step.value)
        emails = (
            select(addresses.c.subscriber_code, addresses.c.email)
            .join(deliveries, deliveries.c.address_id == addresses.c.id)
            .where(
                deliveries.c.alert_id == alert_id,
                addresses.c.subscriber_code.in_(
                    select(escalations.c.subscriber_code).where(escalations.c.alert_id == alert_id)
                ),
            )
            .distinct()
            .order_by(addresses.c.subscriber_code, addresses.c.email)
        )
        async with reading(self._engine) as conn:
            answered = await latest_answers(conn, alert_id)
            by_code: dict[str, list[str]] = {}
            for code, email in (await conn.execute(emails)).all():
                by_code.setdefault(code, []).append(email)
            rows = (await conn.execute(query)).all()
        return [
            Listed(r[0], r[1], r[2], r[3], r[4], r[5], r[6], answered.get(r[0]), by_code.get(r[0], []))
            for r in rows
        ]

    async def counts(self, alert_id: str) -> dict[str, int]:
        """How many organisations were escalated at each step."""
        query = (
            select(escalations.c.step, func.count())
            .where(escalations.c.alert_id == alert_id)
            .group_by(escalations.c.step)
        )
        async with reading(self._engine) as conn:
            return {step: n for step, n in (await conn.execute(query)).all()}


def _insert_ignoring_duplicates(conn: AsyncConnection, table: Table) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


async def _plan(
    conn: AsyncConnection, alert: AlertView, step: Step, *, domain: str, now: datetime
) -> tuple[dict[str, Escalated], dict[str, list[dict[str, Any]]]]:
    """The alert's silent organisations not yet escalated at `step`, and per organisation the delivery
    rows `reminded` would queue: a reminder threaded under each alert mail that was sent, and the
    alert for each backup address that had none."""
    mailed = (
        await conn.execute(
            select(
                addresses.c.subscriber_code,
                subscribers.c.name,
                subscribers.c.prefecture,
                deliveries.c.address_id,
                deliveries.c.email,
                deliveries.c.state,
                deliveries.c.message_id,
                deliveries.c.references,
            )
            .join(addresses, deliveries.c.address_id == addresses.c.id)
            .join(subscribers, addresses.c.subscriber_code == subscribers.c.code)
            .where(deliveries.c.alert_id == alert.id, deliveries.c.purpose == Purpose.ALERT.value)
            .order_by(addresses.c.subscriber_code, deliveries.c.id)
        )
    ).all()
    answered = (await latest_answers(conn, alert.id)).keys()
    done = set(
        (
            await conn.execute(
                select(escalations.c.subscriber_code).where(
                    escalations.c.alert_id == alert.id, escalations.c.step == step.value
                )
            )
        ).scalars()
    )
    plans: dict[str, Escalated] = {}
    mail: dict[str, list[dict[str, Any]]] = {}
    for code, name, prefecture, address_id, email, state, message_id, references in mailed:
        if code in answered or code in done:
            continue
        plan = plans.setdefault(code, Escalated(code, name, prefecture))
        if step is Step.REMINDED and state == DeliveryState.SENT:
            plan.reminders.append(email)
            threaded = {"in_reply_to": message_id, "references": f"{references or ''} {message_id}".strip()}
            reminder = _row(alert.id, address_id, email, Purpose.REMINDER, domain, now) | threaded
            mail.setdefault(code, []).append(reminder)
    if step is Step.REMINDED and plans:
        released = alert.released_by is not None
        mailed_already = (
            select(deliveries.c.id)
            .where(deliveries.c.alert_id == alert.id, deliveries.c.address_id == addresses.c.id)
            .exists()
        )
        backups = await conn.execute(
            select(
                addresses.c.subscriber_code,
                addresses.c.id,
                addresses.c.email,
                addresses.c.role,
                addresses.c.contact,
            )
            .where(
                addresses.c.subscriber_code.in_(list(plans)),
                addresses.c.role == Role.BACKUP.value,
                addresses.c.active.is_(True),
                ~mailed_already,
            )
            .order_by(addresses.c.email)
        )
        for code, address_id, email, role, contact in backups.all():
            if tlp_withholds(alert.tlp, role=role, contact=contact, released=released) is None:
                plans[code].backups.append(email)
                mail.setdefault(code, []).append(
                    _row(alert.id, address_id, email, Purpose.BACKUP, domain, now)
                )
    return plans, mail


async def _queue_mail(
    conn: AsyncConnection, escalated: list[Escalated], mail: dict[str, list[dict[str, Any]]], *, now: datetime
) -> None:
    """Queue the planned mail of the organisations this call escalated; note each one's delivery ids."""
    rows = [row for e in escalated for row in mail.get(e.code, [])]
    if not rows:
        return
    created = (
        await conn.execute(insert(deliveries).returning(deliveries.c.id, deliveries.c.email), rows)
    ).all()
    events = transition_events([(i, 0) for i, _ in created], DeliveryState.QUEUED, now, reply="escalated")
    await conn.execute(insert(delivery_events), events)
    by_email = {email: i for i, email in created}
    for e in escalated:
        e.delivery_ids = [by_email[m] for m in (*e.reminders, *e.backups)]


def _row(
    alert_id: str, address_id: int, email: str, purpose: Purpose, domain: str, now: datetime
) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "address_id": address_id,
        "email": email,
        "state": DeliveryState.QUEUED.value,
        "attempts": 0,
        "message_id": f"<{alert_id}.{address_id}.{purpose.value}@{domain}>",
        "purpose": purpose.value,
        "in_reply_to": None,
        "references": None,
        "created_at": now,
        "updated_at": now,
    }
