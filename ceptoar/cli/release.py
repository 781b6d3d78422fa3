"""`ceptoar release`: an operator sends a held alert, to an audience they chose for TLP:RED.

A TLP:RED alert is never fanned out: it goes only to the addresses the
operator names (an address of the registry, or an organisation's code for
its designated security contact). Any other held alert (one whose
reference could not be found) goes to the audience the dispatcher would
have chosen, or to the addresses named. Drafts and system messages are
never delivered. The release and its audit entry are written together,
before any job is published.
"""

from __future__ import annotations

import click

from ceptoar.bus import Bus, lane_for
from ceptoar.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_DECLINED,
    fail,
    resolve_alert,
    run,
    say,
    settings,
)
from ceptoar.compose import current_actor
from ceptoar.config import Settings
from ceptoar.dispatch.audience import choose_audience
from ceptoar.model.alert import AlertView
from ceptoar.model.codes import check_digit
from ceptoar.model.notice import Notice, NoticeStatus, Severity, Tlp
from ceptoar.model.states import AlertState
from ceptoar.model.subscriber import Candidate
from ceptoar.store import Store

__all__ = ["release"]


def _named(to: tuple[str, ...], candidates: list[Candidate]) -> list[Candidate]:
    """The addresses an operator named: registry addresses, or organisations' designated contacts."""
    by_email = {c.email: c for c in candidates}
    contacts = {c.code: c for c in candidates if c.contact}
    chosen: dict[int, Candidate] = {}
    for word in to:
        if "@" in word:
            found = by_email.get(word.lower())
            if found is None:
                fail(f"--to {word}: no active address of the registry; nothing was released", EXIT_BAD_INPUT)
        else:
            code = word + str(check_digit(word)) if len(word) == 5 and word.isdigit() else word
            found = contacts.get(code)
            if found is None:
                fail(
                    f"--to {word}: no organisation with this code has a designated security contact; "
                    "name the address instead; nothing was released",
                    EXIT_BAD_INPUT,
                )
        chosen[found.address_id] = found
    return list(chosen.values())


def _audience(
    alert: AlertView, notice: Notice, to: tuple[str, ...], candidates: list[Candidate]
) -> list[Candidate]:
    if notice.status in (NoticeStatus.DRAFT, NoticeStatus.SYSTEM):
        kind = notice.status.value
        fail(f"alert {alert.id} is a {kind} message, never delivered; compose one instead", EXIT_BAD_INPUT)
    if to:
        return _named(to, candidates)
    if notice.tlp is Tlp.RED:
        fail(
            "TLP:RED goes only to addresses an operator names: --to ADDRESS, or --to CODE for the "
            "organisation's designated security contact; nothing was released",
            EXIT_BAD_INPUT,
        )
    return choose_audience(candidates, notice=notice, severity=Severity(alert.severity)).recipients


async def _release(s: Settings, ident: str, to: tuple[str, ...], yes: bool, dry_run: bool) -> None:
    who = current_actor()
    async with await Store.open(s.db_url) as store:
        alert = await resolve_alert(store, ident)
        if alert.state != AlertState.HELD:
            fail(f"alert {alert.id} is {alert.state}, not held; nothing was released", EXIT_BAD_INPUT)
        notice = Notice.model_validate(alert.notice)
        recipients = _audience(alert, notice, to, await store.subscribers.candidates())
        if not recipients:
            fail("the release would reach no address; nothing was released", EXIT_BAD_INPUT)
        say(f"Alert {alert.id}  TLP:{alert.tlp}  {alert.title}")
        say(f"  held: {alert.held_reason}")
        say(f"  release to {len(recipients)} addresses:")
        for c in recipients[:30]:
            say(f"    {c.email}  ({c.code}, {c.role}{', contact' if c.contact else ''})")
        if len(recipients) > 30:
            say(f"    and {len(recipients) - 30} more")
        if dry_run:
            say("dry run: nothing was released")
            return
        if not yes and not click.confirm(f"Release alert {alert.id} to {len(recipients)} addresses?"):
            fail("not released", EXIT_DECLINED)
        detail = {"tlp": alert.tlp, "held_reason": alert.held_reason, "to": list(to)}
        ids = await store.holds.release(
            alert.id, recipients=recipients, message_id_domain=s.message_id_domain, who=who, detail=detail
        )
        async with Bus.session(s, name="ceptoar-release") as bus:
            await bus.publish_jobs(ids, lane=lane_for(alert.severity), batch=s.publish_batch)
        await store.alerts.mark_published(alert.id)
    say(f"released {alert.id} to {len(ids)} addresses; follow it with: ceptoar status {alert.id} --watch")


@click.command()
@click.argument("ident", metavar="ALERT_ID")
@click.option(
    "--to",
    "to",
    multiple=True,
    help="An address of the registry, or an organisation's code for its designated contact. Repeatable; "
    "required for TLP:RED.",
)
@click.option("--dry-run", is_flag=True, help="Show who it would reach; release nothing.")
@click.option("--yes", is_flag=True, help="Confirm without asking.")
def release(ident: str, to: tuple[str, ...], dry_run: bool, yes: bool) -> None:
    """Send a held alert: TLP:RED to the addresses named, others to their audience."""
    run(_release(settings(), ident, to, yes, dry_run))
