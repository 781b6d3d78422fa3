"""`ceptoar alerts`, `resend`, `report` and `audit`: what was sent, acting on it, and who did what."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ceptoar.bus import Bus, lane_for
from ceptoar.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_DECLINED,
    EXIT_NOT_FOUND,
    fail,
    parse_when,
    resolve_alert,
    run,
    say,
    settings,
)
from ceptoar.compose import current_actor
from ceptoar.config import Settings
from ceptoar.model.alert import AlertStatus, AlertView
from ceptoar.model.notice import Severity
from ceptoar.model.states import MAILED, DeliveryState
from ceptoar.render import SEVERITY_LABELS
from ceptoar.report import csv_report, html_report, text_report
from ceptoar.store import AuditEntry, Pruned, Rejection, Store

__all__ = ["alerts", "audit", "prune", "report", "resend"]



@click.command("alerts")
@click.option("--since", default="24h", show_default=True, help="30m, 24h, 7d or an ISO date.")
@click.option(
    "--severity",
    "severities",
    multiple=True,
    type=click.Choice([s.value for s in Severity]),
    help="Repeatable.",
)
@click.option("--rejected", is_flag=True, help="Instead: notices the dispatcher refused, with why.")
def alerts(since: str, severities: tuple[str, ...], rejected: bool) -> None:
    """Recent alerts: time, severity, TLP, state, deliveries and title."""
    s = settings()
    when = parse_when(since, datetime.now(UTC), ago=True, naive_is_local=True)
    if rejected:
        _list_rejected(s, when)
        return

    async def _list() -> list[tuple[AlertView, AlertStatus]]:
        async with await Store.open(s.db_url) as store:
            found = await store.alerts.recent(since=when, severities=severities)
            return [(a, await store.status(a)) for a in found]

    for a, status in run(_list()):
        sent = sum(status.counts[state] for state in MAILED)
        trouble = "".join(f" {k} {status.counts[k]}" for k in _TROUBLE if status.counts[k])
        created = a.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
        label = SEVERITY_LABELS["ja"][a.severity]
        say(
            f"{created}  {a.id}  {label} TLP:{a.tlp:<12} {a.state:<9} {sent}/{status.total} sent{trouble}  "
            f"{a.title}"
        )


def _list_rejected(s: Settings, when: datetime) -> None:
    async def _read() -> list[Rejection]:
        async with await Store.open(s.db_url) as store:
            return await store.rejections.since(when)

    for r in run(_read()):
        at = r.at.astimezone().strftime("%Y-%m-%d %H:%M")
        notice = f"{r.source}:{r.source_id}" if r.source else (r.source_id or "(no id)")
        field = f" [{r.field}]" if r.field else ""
        say(f"{at}  {notice}{field}  {r.reason}")


# What the alert list points out beside how many were mailed.
_TROUBLE = (DeliveryState.FAILED, DeliveryState.DEFERRED, DeliveryState.CANCELLED)


async def _resend(s: Settings, ident: str, which: str, address: str | None) -> int:
    who = current_actor()
    async with await Store.open(s.db_url) as store:
        alert = await resolve_alert(store, ident)
        why = f"resend ({which}) by {who.operator}"
        states = {"failed": [DeliveryState.FAILED], "deferred": [DeliveryState.DEFERRED]}.get(which, [])
        ids = await store.deliveries.requeue(
            alert.id,
            states=states,
            email=address,
            why=why,
            audit=(who, "resend", {"which": which, "address": address}),
        )
        if address and not ids:
            fail(f"alert {alert.id} has no delivery to {address} that can be sent again", EXIT_NOT_FOUND)
        if ids:
            async with Bus.session(s, name="ceptoar-resend") as bus:
                await bus.publish_jobs(ids, lane=lane_for(alert.severity), batch=s.publish_batch)
        return len(ids)


@click.command()
@click.argument("ident", metavar="ALERT_ID")
@click.option("--failed", "which", flag_value="failed", help="Every failed delivery.")
@click.option("--deferred", "which", flag_value="deferred", help="Every deferred delivery, now.")
@click.option("--address", help="The delivery to one address, whatever its state.")
def resend(ident: str, which: str | None, address: str | None) -> None:
    """Send deliveries of an alert again (same Message-ID, so receivers can tell)."""
    if (which is None) == (address is None):
        fail("say which: --failed, --deferred or --address ADDR", EXIT_BAD_INPUT)
    n = run(_resend(settings(), ident, which or "address", address))
    say(f"{n} deliver{'y' if n == 1 else 'ies'} queued again")


@click.command()
@click.argument("ident", metavar="ALERT_ID")
@click.option(
    "--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path), help="Write the full matrix."
)
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a standalone page with the counts and a chart.",
)
def report(ident: str, csv_file: Path | None, html_file: Path | None) -> None:
    """Per-recipient report: organisation, address, state, attempts, last reply, times."""
    s = settings()

    async def _report() -> tuple[AlertView, dict[str, int], list[dict[str, Any]], list[tuple[datetime, str]]]:
        async with await Store.open(s.db_url) as store:
            alert = await resolve_alert(store, ident)
            return (
                alert,
                await store.alerts.counts(alert.id),
                await store.deliveries.report(alert.id),
                await store.deliveries.timeline(alert.id),
            )

    alert, counts, rows, timeline = run(_report())
    if csv_file:
        csv_file.write_text(csv_report(rows), encoding="utf-8")
        say(f"wrote {len(rows)} rows to {csv_file}", err=True)
    if html_file:
        html_file.write_text(html_report(alert, counts, rows, timeline), encoding="utf-8")
        say(f"wrote {html_file}", err=True)
    if not csv_file and not html_file:
        say(text_report(rows), multiline=True)


@click.command("audit")
@click.option("--since", default=None, help="30m, 24h, 7d or an ISO date (default: everything).")
def audit(since: str | None) -> None:
    """Every operator action: when, who, what, on which alert."""
    s = settings()
    when = parse_when(since, datetime.now(UTC), ago=True, naive_is_local=True) if since else None

    async def _entries() -> list[AuditEntry]:
        async with await Store.open(s.db_url) as store:
            return list(await store.audit.since(when))

    for e in run(_entries()):
        at = e.at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        target = e.alert_id or e.notice_id or "-"
        detail = " ".join(f"{k}={v}" for k, v in e.detail.items() if v not in (None, [], ""))
        where = f"  ({e.os_user or '?'}@{e.host or '?'})" if e.os_user or e.host else ""
        say(f"{at}  {e.operator:<12} {e.action:<8} {target}  {detail}{where}")


_CONFIRM_PRUNE = "Delete them? Alerts, deliveries, answers and the audit log stay."


@click.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    help="A retention period (90d, 2160h) or an ISO date: what is older goes.",
)
@click.option("--dry-run", is_flag=True, help="Count what would go; delete nothing.")
@click.option("--yes", is_flag=True, help="Confirm without asking.")
def prune(older_than: str, dry_run: bool, yes: bool) -> None:
    """Delete delivery events, HTTP receipts and returned mail older than a retention period.

    Alerts, deliveries, answers and the audit log stay."""
    s = settings()
    before = parse_when(older_than, datetime.now(UTC), ago=True, naive_is_local=True)

    async def _prune() -> Pruned | None:
        who = current_actor()
        async with await Store.open(s.db_url) as store:
            would = await store.retention.count(before=before)
            say(f"before {before.astimezone():%Y-%m-%d %H:%M}: {would.delivery_events} delivery events, "
                f"{would.receipts} receipts, {would.returned} returned messages")
            if dry_run:
                say("dry run: nothing was deleted")
                return None
            if not yes and not click.confirm(_CONFIRM_PRUNE):
                fail("nothing was deleted", EXIT_DECLINED)
            return await store.retention.prune(before=before, who=who)

    pruned = run(_prune())
    if pruned is not None:
        say(
            f"deleted {pruned.delivery_events} delivery events, {pruned.receipts} receipts and "
            f"{pruned.returned} returned messages"
        )
