"""`ceptoar digest`: compose, preview, send and list issues of the security mail magazine."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from ceptoar.bus import Bus
from ceptoar.cli.common import EXIT_BAD_INPUT, EXIT_DECLINED, EXIT_NOT_FOUND, fail, run, say, settings
from ceptoar.compose import current_actor
from ceptoar.compose.digest import DigestError, Planned, article_of, issue_notice, plan_issue, send_issue
from ceptoar.config import Settings
from ceptoar.model.alert import AlertView
from ceptoar.model.digest import Period
from ceptoar.render import Renderer
from ceptoar.render.digest import DigestMail
from ceptoar.store import DigestIssue, IssueSent, Store

__all__ = ["digest"]


def _period(text: str) -> Period:
    try:
        return Period.parse(text)
    except ValueError as exc:
        fail(str(exc), EXIT_BAD_INPUT)


def _articles(files: tuple[Path, ...]) -> list[dict[str, str]]:
    try:
        return [article_of(f) for f in files]
    except DigestError as exc:
        fail(str(exc), EXIT_BAD_INPUT)


async def _issue_or_next(store: Store, period: Period) -> DigestIssue:
    """The period's issue, or what it would be if it were composed now (numbered next, no articles)."""
    found = await store.digests.get(period.kind, period.name)
    if found is not None:
        return found
    numbers = [i.number for i in await store.digests.issues() if i.kind == period.kind]
    now = datetime.now(UTC)
    return DigestIssue(
        0, period.kind, period.name, max(numbers, default=0) + 1, [], "new", now, "", None, None, None
    )


def _summary(issue: DigestIssue, planned: Planned) -> None:
    state = {"draft": "draft", "new": "not composed yet", "sent": f"sent as {issue.alert_id}"}[issue.state]
    say(f"{issue.kind} issue {issue.period}: No. {issue.number} (第{issue.number}号), {state}")
    say(f"  {len(planned.items)} notices in the period; {len(planned.recipients)} addresses take it")
    for n, (items, ids) in enumerate(planned.variants):
        say(f"  variant {n}: {len(ids)} addresses, {len(items)} notices")
    for a in issue.articles:
        say(f"  article: {a['title']}")


@click.group()
def digest() -> None:
    """The security mail magazine: a periodic digest of the notices each address's subscription admits."""


@digest.command()
@click.option("--period", required=True, help="A month (2026-11) or an ISO week (2026-W47).")
@click.option(
    "--article",
    "articles",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An editor's article in Markdown, its first line '# Title'; repeatable, in order.",
)
def compose(period: str, articles: tuple[Path, ...]) -> None:
    """Compose (or recompose) the period's issue with the editor's articles; audited."""
    p, texts, s = _period(period), _articles(articles), settings()

    async def _compose() -> tuple[DigestIssue, Planned]:
        async with await Store.open(s.db_url) as store:
            try:
                issue = await store.digests.compose(p.kind, p.name, texts, who=current_actor())
            except IssueSent as exc:
                fail(f"{exc}; an issue is sent once and not changed after", EXIT_BAD_INPUT)
            return issue, await plan_issue(store, s, p)

    issue, planned = run(_compose())
    _summary(issue, planned)


@digest.command()
@click.option("--period", required=True, help="A month (2026-11) or an ISO week (2026-W47).")
@click.option("--for", "address", help="Show the issue as this address gets it.")
@click.option(
    "--html", "html_file", type=click.Path(dir_okay=False, path_type=Path), help="Write its HTML part."
)
def preview(period: str, address: str | None, html_file: Path | None) -> None:
    """Who gets the period's issue and what; with --for, the mail one address gets."""
    p, s = _period(period), settings()

    async def _preview() -> tuple[DigestIssue, Planned]:
        async with await Store.open(s.db_url) as store:
            return await _issue_or_next(store, p), await plan_issue(store, s, p)

    issue, planned = run(_preview())
    _summary(issue, planned)
    if address is None:
        return
    who = next((c for c in planned.recipients if c.email == address.strip().lower()), None)
    if who is None:
        fail(f"{address} does not take the {p.kind} digest (or is not registered)", EXIT_NOT_FOUND)
    # A sent issue is shown as it was sent; a draft as it would be sent now.
    content = issue.content or planned.content(issue)
    variant = next((n for n, v in enumerate(content["variants"]) if who.address_id in v["addresses"]), None)
    if variant is None:
        fail(f"{address} did not get the issue sent for {p.name}", EXIT_NOT_FOUND)
    mail = _render(s, issue, p, DigestMail(content, variant), who.language)
    say()
    say(f"To: {who.email}")
    say(f"Subject: {mail[0]}")
    say()
    say(mail[1], multiline=True)
    if html_file is not None:
        html_file.write_text(mail[2], encoding="utf-8")
        say(f"wrote the HTML part to {html_file}", err=True)


def _render(s: Settings, issue: DigestIssue, p: Period, mail: DigestMail, lang: str) -> tuple[str, str, str]:
    notice = issue_notice(issue, p, datetime.now(UTC))
    view = AlertView.of_notice(notice, severity="low", rules=["digest"], id=issue.alert_id or "(preview)")
    rendered = Renderer.from_settings(s).render(view, lang, digest=mail)
    return rendered.subject, rendered.text, rendered.html


@digest.command()
@click.option("--period", required=True, help="A month (2026-11) or an ISO week (2026-W47).")
@click.option("--yes", is_flag=True, help="Confirm without asking.")
def send(period: str, yes: bool) -> None:
    """Send the period's issue to every address that takes it, once; audited."""
    p, s = _period(period), settings()

    async def _send() -> None:
        who = current_actor()
        async with await Store.open(s.db_url) as store:
            issue = await _issue_or_next(store, p)
            if issue.state == "sent":
                at = f"{issue.sent_at:%Y-%m-%d %H:%M}" if issue.sent_at else "?"
                say(f"the {p.kind} issue for {p.name} was sent as {issue.alert_id} at {at}; nothing was sent")
                return
            planned = await plan_issue(store, s, p)
            _summary(issue, planned)
            if not planned.recipients:
                fail(f"no address takes the {p.kind} digest; nothing was sent", EXIT_NOT_FOUND)
            if not yes and not click.confirm(
                f"Send No. {issue.number} to {len(planned.recipients)} addresses?"
            ):
                fail("not sent", EXIT_DECLINED)
            try:
                async with Bus.session(s, name="ceptoar-digest") as bus:
                    sent = await send_issue(s, store, bus, p, who=who)
            except DigestError as exc:
                fail(f"{exc}; nothing was sent", EXIT_BAD_INPUT)
        if sent.sent_now:
            say(f"sent as alert {sent.alert_id} to {sent.addresses} addresses")
            say(f"follow it with: ceptoar status {sent.alert_id}")
        else:
            say(f"the issue was sent already, as {sent.alert_id}; nothing was sent")

    run(_send())


@digest.command("list")
def list_() -> None:
    """Every issue: kind, period, number, state, when sent, its alert."""
    s = settings()

    async def _list() -> list[DigestIssue]:
        async with await Store.open(s.db_url) as store:
            return await store.digests.issues()

    for i in run(_list()):
        when = f"sent {i.sent_at.astimezone():%Y-%m-%d %H:%M} as {i.alert_id}" if i.sent_at else "draft"
        items = len(i.content["items"]) if i.content else "-"
        articles = ", ".join(a["title"] for a in i.articles) or "-"
        say(f"{i.kind:<8} {i.period:<9} No. {i.number:<4} {when}  notices {items}  articles: {articles}")
