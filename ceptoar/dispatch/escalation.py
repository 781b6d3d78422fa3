"""Escalating the silent organisations of serious alerts, at their deadlines or by hand.

The sweeper of every `ceptoar serve` calls `escalate_due` on each tick;
the store makes each organisation's step happen once however many do
(`ceptoar.store.escalations`). The reminders and backup copies go out on
the alert's own lane, so a critical alert's reminders overtake bulk mail.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ceptoar.bus import Bus, lane_for
from ceptoar.config import Settings
from ceptoar.log import get_logger
from ceptoar.metrics import metrics
from ceptoar.model.alert import AlertView
from ceptoar.model.escalation import Step, due_steps
from ceptoar.store import Actor, Escalated, Store

__all__ = ["escalate", "escalate_due"]

log = get_logger(__name__)

# How long after its last deadline an alert is still looked at: a service that was down catches up.
_CATCH_UP = timedelta(days=1)


async def escalate(
    store: Store,
    bus: Bus | None,
    settings: Settings,
    alert: AlertView,
    step: Step,
    *,
    by: str,
    dry_run: bool = False,
    audit: Actor | None = None,
) -> list[Escalated]:
    """Escalate the alert's silent organisations at `step` and publish the mail it queued.

    Without a bus (or should publishing fail) the queued mail is left to the
    sweeper, which publishes jobs for deliveries left queued.
    """
    escalated = await store.escalations.escalate(
        alert, step, by=by, domain=settings.message_id_domain, dry_run=dry_run, audit=audit
    )
    if dry_run or not escalated:
        return escalated
    ids = [i for e in escalated for i in e.delivery_ids]
    metrics().escalations.labels(step.value).inc(len(escalated))
    log.warning(
        "alert.escalated",
        alert_id=alert.id,
        step=step.value,
        organisations=len(escalated),
        deliveries=len(ids),
        by=by,
    )
    if ids and bus is not None:
        await bus.publish_jobs(ids, lane=lane_for(alert.severity), batch=settings.publish_batch)
    return escalated


async def escalate_due(store: Store, bus: Bus | None, settings: Settings) -> int:
    """Escalate every alert whose deadlines have passed; return how many organisations this call escalated."""
    deadlines = {**settings.escalate_after, **settings.call_after}
    if not deadlines:
        return 0
    now = datetime.now(UTC)
    since = now - timedelta(minutes=max(deadlines.values())) - _CATCH_UP
    done = 0
    for alert in await store.escalations.candidates(severities=sorted(deadlines), since=since):
        steps = due_steps(
            alert.severity,
            alert.created_at,
            now,
            remind_after=settings.escalate_after,
            call_after=settings.call_after,
        )
        for step in steps:
            done += len(await escalate(store, bus, settings, alert, step, by="sweeper"))
    return done
