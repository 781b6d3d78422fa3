"""`ceptoar escalate`: remind an alert's silent organisations now, or see who was escalated."""

from __future__ import annotations

import click

from ceptoar.bus import Bus
from ceptoar.cli.common import EXIT_BAD_INPUT, fail, resolve_alert, run, say, settings
from ceptoar.compose import current_actor
from ceptoar.config import Settings
from ceptoar.dispatch.escalation import escalate as escalate_alert
from ceptoar.model.answer import Answer
from ceptoar.model.escalation import Step
from ceptoar.model.states import AlertState
from ceptoar.registry.prefectures import PREFECTURE_NAMES
from ceptoar.store import Escalated, Listed, Store

__all__ = ["escalate"]


async def _escalate(s: Settings, ident: str, step: Step, dry_run: bool) -> tuple[str, list[Escalated]]:
    async with await Store.open(s.db_url) as store:
        alert = await resolve_alert(store, ident)
        if alert.state != AlertState.ACTIVE or alert.msg_type == "cancel":
            fail(f"alert {alert.id} is {alert.state} ({alert.msg_type}): nothing to escalate", EXIT_BAD_INPUT)
        who = current_actor()
        if dry_run:
            done = await escalate_alert(store, None, s, alert, step, by=who.operator, dry_run=True)
            return alert.id, done
        async with Bus.session(s, name="ceptoar-escalate") as bus:
            done = await escalate_alert(store, bus, s, alert, step, by=who.operator, audit=who)
        return alert.id, done


async def _listed(s: Settings, ident: str) -> tuple[str, list[Listed]]:
    async with await Store.open(s.db_url) as store:
        alert = await resolve_alert(store, ident)
        return alert.id, await store.escalations.listed(alert.id)


@click.command()
@click.argument("ident", metavar="ALERT_ID")
@click.option(
    "--dry-run", is_flag=True, help="List who would be escalated and what they would get; change nothing."
)
@click.option(
    "--call", is_flag=True, help="List the silent organisations for a phone call instead of mailing them."
)
@click.option(
    "--list", "listing", is_flag=True, help="Show the escalations so far and who has answered since."
)
def escalate(ident: str, dry_run: bool, call: bool, listing: bool) -> None:
    """Escalate an alert's silent organisations now, without waiting for the deadline.

    Each organisation with no answer gets a reminder at its addresses that had the alert and the
    alert at its backup addresses, once (the sweeper does the same at the deadline, and neither
    escalates an organisation twice). Audited.
    """
    s = settings()
    if listing:
        alert_id, listed = run(_listed(s, ident))
        say(f"alert {alert_id}: {len(listed)} escalation steps")
        for row in listed:
            answer = f"answered {Answer(row.answer).label}" if row.answer else "still silent"
            where = PREFECTURE_NAMES.get(row.prefecture, row.prefecture)
            at = row.at.astimezone().strftime("%m-%d %H:%M")
            org = f"{row.code} {row.name} ({where})"
            say(f"  {org}  {row.step:<8} {at} by {row.by}  {answer}  {', '.join(row.addresses)}")
        return
    step = Step.CALL if call else Step.REMINDED
    alert_id, done = run(_escalate(s, ident, step, dry_run))
    verb = "would be" if dry_run else "were"
    what = "listed for a phone call" if call else "reminded"
    say(f"alert {alert_id}: {len(done)} organisations {verb} {what}")
    for e in done:
        where = PREFECTURE_NAMES.get(e.prefecture, e.prefecture)
        mail = (
            ""
            if call
            else f"  reminder: {', '.join(e.reminders) or '-'}  backup: {', '.join(e.backups) or '-'}"
        )
        say(f"  {e.code} {e.name} ({where}){mail}")
