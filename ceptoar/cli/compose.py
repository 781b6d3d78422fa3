"""`ceptoar compose` and `ceptoar cancel`: an operator writes, previews, confirms and sends an alert.

Every field can be given as a flag; what is missing is asked for at the
terminal. Nothing is published when anything is invalid, when the
operator declines, or with --dry-run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from ceptoar.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_DECLINED,
    fail,
    parse_when,
    resolve_alert,
    run,
    say,
    settings,
)
from ceptoar.cli.feed import read_notice
from ceptoar.compose import Draft, TargetError, build_notice, current_actor, parse_targets, short_code
from ceptoar.compose.preview import preview, preview_mail
from ceptoar.compose.send import cancel_draft, send_plan
from ceptoar.compose.targets import describe_area
from ceptoar.config import Settings
from ceptoar.dispatch.plan import Plan
from ceptoar.dispatch.rules import load_rules
from ceptoar.errors import InvalidNotice
from ceptoar.model.alert import AlertView
from ceptoar.model.notice import Category, Notice, Severity, Tlp
from ceptoar.render import SEVERITY_LABELS, Renderer
from ceptoar.store import Store

__all__ = ["cancel", "compose"]

CATEGORIES = [c.value for c in Category]
SEVERITIES = ["auto", *(s.value for s in Severity)]
TLPS = [t.value for t in Tlp]


@dataclass
class Fields:
    """What the operator gave as flags (None: ask, or take from the original)."""

    title: str | None
    summary: str | None
    body_file: Path | None
    category: str | None
    severity: str | None
    tlp: str | None
    targets: tuple[str, ...]
    expires: str | None
    title_en: str | None
    summary_en: str | None


def _ask(
    value: str | None,
    prompt: str,
    default: str | None,
    interactive: bool,
    *,
    choices: list[str] | None = None,
    show_default: bool = True,
) -> str:
    """The flag's value; else, at a terminal, the operator's answer; else the default."""
    if value is not None:
        return value
    if not interactive:
        if default is None:
            fail(
                f"{prompt.split(' (')[0].lower()} is missing: give it as a flag; nothing was published",
                EXIT_BAD_INPUT,
            )
        return default
    kind = click.Choice(choices) if choices else None
    return str(click.prompt(prompt, default=default, type=kind, show_default=show_default))


def _body(path: Path | None, interactive: bool) -> str:
    if path is not None:
        return sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    if not interactive:
        return ""
    answer = click.prompt(
        "Body: a file, '-' for the editor, or blank for none", default="", show_default=False
    )
    if answer == "-":
        return click.edit("") or ""
    return Path(answer).read_text(encoding="utf-8") if answer else ""


def _draft(f: Fields, base: Notice | None, orgs: dict[str, str], i: bool, now: datetime) -> Draft:
    """The operator's draft from flags, the original alert, and (at a terminal) answers."""
    title = _ask(f.title, "Title", base.title if base else None, i)
    summary = _ask(f.summary, "Summary", base.summary if base else None, i)
    body = _body(f.body_file, i) or (base.body if base else "")
    category = _ask(
        f.category, "Category", base.category.value if base else "advisory", i, choices=CATEGORIES
    )
    severity = _ask(f.severity, "Severity (auto: the rules decide)", "auto", i, choices=SEVERITIES)
    tlp = _ask(f.tlp, "TLP", base.tlp.value if base else "GREEN", i, choices=TLPS)
    targets = f.targets or (tuple(base.area) if base and base.area else ())
    if not targets:
        targets = (_ask(None, "Target (all, prefectures or codes)", "all" if i else None, i),)
    when = _ask(f.expires, "Expires (90m, 24h, 7d, ISO, blank: never)", "", i, show_default=False)
    translations = {}
    title_en, summary_en = f.title_en, f.summary_en
    if (
        i
        and title_en is None
        and click.confirm("Also in English, for addresses that read English?", default=False)
    ):
        title_en = click.prompt("Title (English)")
        summary_en = click.prompt("Summary (English)")
    if title_en and summary_en:
        translations["en"] = {"title": title_en, "summary": summary_en}
    return Draft(
        title=title,
        summary=summary,
        body=body,
        category=category,
        severity=None if severity == "auto" else severity,
        tlp=tlp,
        area=parse_targets(targets, orgs),
        expires=parse_when(when, now, ago=False, naive_is_local=False) if when.strip() else None,
        translations=translations,
    )


def _show(p: Plan, parent: AlertView | None, orgs: dict[str, str]) -> None:
    n, c = p.notice, p.classification
    say(f"Alert {n.id}  (confirmation code {short_code(n.id)})")
    say(f"  {n.msg_type.value}: {n.title}")
    rules = ", ".join(c.rules)
    alone = (
        f"; the rules alone: {c.computed.severity.value} by {', '.join(c.computed.rules)}"
        if c.computed
        else ""
    )
    say(f"  severity {SEVERITY_LABELS['ja'][c.severity.value]} {c.severity.value} ({rules}{alone})")
    say(f"  TLP:{n.tlp.value}  area: {' '.join(n.area) or 'every organisation'}")
    for entry in n.area:
        say(f"    {describe_area(entry, orgs)}")
    if parent is not None:
        say(f"  refers to alert {parent.id}: {parent.title}")
    if p.held:
        say(f"  HELD, reaches no one: {p.held}")
    if p.unsent:
        say(f"  cancels {p.unsent} deliveries not yet sent")
    say(f"  audience: {len(p.audience.recipients)} addresses in {p.audience.organisations} organisations")
    say("    by role: " + ", ".join(f"{r} {k}" for r, k in sorted(p.audience.by_role.items())))
    top = ", ".join(f"{name} {k}" for name, k in p.audience.by_prefecture.most_common(8))
    more = len(p.audience.by_prefecture) - 8
    say(f"    by prefecture: {top}" + (f", and {more} more" if more > 0 else ""))
    if p.audience.removed:
        say("    left out: " + ", ".join(f"{k} {v}" for k, v in sorted(p.audience.removed.items())))


def _show_mail(p: Plan, code: str, html_file: Path | None, s: Settings) -> None:
    mail = preview_mail(p, code, Renderer.from_settings(s))
    if mail is None:
        fail(f"organisation {code} does not receive this alert", EXIT_BAD_INPUT)
    target = html_file or s.var_dir / f"preview-{code}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(mail.html, encoding="utf-8")
    say()
    say(f"--- as {code} receives it, at {mail.address} (HTML part: {target}) ---")
    say(f"Subject: {mail.subject}")
    say()
    say(mail.text, multiline=True)
    say("--- end ---")
    say()


def _confirm(p: Plan, yes: bool) -> None:
    if yes:
        return
    n, severity = p.notice, p.classification.severity
    label = SEVERITY_LABELS["ja"][severity.value]
    if not click.confirm(f"Send {label} {severity.value} alert to {len(p.audience.recipients)} addresses?"):
        fail("not sent", EXIT_DECLINED)
    if severity is Severity.CRITICAL or not n.area:
        code = short_code(n.id)
        typed = click.prompt(
            f"This goes to {'every organisation' if not n.area else 'them'} as "
            f"{severity.value}; type the confirmation code {code} to send"
        )
        if typed.strip() != code:
            fail("the confirmation code did not match; not sent", EXIT_DECLINED)


async def _compose(s: Settings, f: Fields, opts: dict[str, object]) -> None:
    who = current_actor()
    now = datetime.now(UTC)
    async with await Store.open(s.db_url) as store:
        parent = None
        if opts["update"]:
            parent = await resolve_alert(store, str(opts["update"]))
        base = Notice.model_validate(parent.notice) if parent else None
        if opts["from_file"]:
            base = read_notice(Path(str(opts["from_file"])))[1].notice
        orgs = {r.code: r.name for r in await store.subscribers.export_rows()}
        # At a terminal, whatever no flag gave is asked for; a script must give it all.
        interactive = f.title is None and sys.stdin.isatty()
        try:
            draft = _draft(f, base, orgs, interactive, now)
            if parent is not None:
                draft.msg_type, draft.references = "update", [parent.id]
            notice = build_notice(draft, now=now)
        except (TargetError, InvalidNotice) as exc:
            fail(f"{exc}; nothing was published", EXIT_BAD_INPUT)
        p = await preview(store, load_rules(s.rules), notice)
        _show(p, parent, orgs)
        if opts["preview_for"]:
            _show_mail(p, str(opts["preview_for"]), opts["preview_html"], s)  # type: ignore[arg-type]
        if opts["dry_run"]:
            say("dry run: nothing was published")
            return
        _confirm(p, bool(opts["yes"]))
        await send_plan(s, store, p, "update" if parent else "compose", parent, who)
    say(f"sent {notice.id}; follow it with: ceptoar status {notice.id} --watch")


_flags = [
    click.option("--title"),
    click.option("--summary"),
    click.option(
        "--body-file", type=click.Path(dir_okay=False, path_type=Path), help="'-' reads standard input."
    ),
    click.option("--category", type=click.Choice(CATEGORIES)),
    click.option(
        "--severity", type=click.Choice(SEVERITIES), help="Override the rules (auto: let them decide)."
    ),
    click.option("--tlp", type=click.Choice(TLPS)),
    click.option("--target", "targets", multiple=True, help="all, prefectures or codes; repeatable."),
    click.option("--expires", help="90m, 24h, 7d or an ISO date-time."),
    click.option("--title-en", help="English title for addresses that read English."),
    click.option("--summary-en", help="English summary."),
    click.option(
        "--from-file", type=click.Path(exists=True, dir_okay=False), help="Start from a notice file."
    ),
    click.option("--update", "update", metavar="ALERT_ID", help="Update an earlier alert."),
    click.option("--cancel", "cancel_id", metavar="ALERT_ID", help="Cancel an earlier alert."),
    click.option("--preview-for", metavar="CODE", help="Show the mail as this organisation will get it."),
    click.option(
        "--preview-html",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Where to write that mail's HTML part (default var/preview-CODE.html).",
    ),
    click.option("--dry-run", is_flag=True, help="Preview only; publish nothing."),
    click.option("--yes", is_flag=True, help="Confirm without asking (scripts)."),
]


F = TypeVar("F", bound=Callable[..., Any])


def _with_flags(fn: F) -> F:
    for flag in reversed(_flags):
        fn = flag(fn)
    return fn


@click.command()
@_with_flags
def compose(**kw: object) -> None:
    """Write an alert as an operator, preview it, confirm it, send it."""
    s = settings()
    if kw["cancel_id"]:
        run(_cancel(s, str(kw["cancel_id"]), None, bool(kw["yes"]), bool(kw["dry_run"])))
        return
    fields = Fields(
        *(
            kw[k]
            for k in (
                "title",
                "summary",
                "body_file",
                "category",
                "severity",
                "tlp",  # type: ignore[arg-type]
                "targets",
                "expires",
                "title_en",
                "summary_en",
            )
        )
    )
    run(_compose(s, fields, kw))


async def _cancel(s: Settings, ident: str, reason: str | None, yes: bool, dry_run: bool) -> None:
    who = current_actor()
    async with await Store.open(s.db_url) as store:
        parent = await resolve_alert(store, ident)
        draft = cancel_draft(parent, reason)
        notice = build_notice(draft)
        p = await preview(store, load_rules(s.rules), notice)
        _show(p, parent, {})
        if dry_run:
            say("dry run: nothing was published")
            return
        if not yes and not click.confirm(f"Cancel alert {parent.id}?"):
            fail("not cancelled", EXIT_DECLINED)
        await send_plan(s, store, p, "cancel", parent, who)
    say(f"cancel sent as {notice.id}")


@click.command()
@click.argument("ident", metavar="ALERT_ID")
@click.option("--reason", help="What the cancellation says (default: a short notice in Japanese).")
@click.option("--dry-run", is_flag=True)
@click.option("--yes", is_flag=True, help="Confirm without asking.")
def cancel(ident: str, reason: str | None, dry_run: bool, yes: bool) -> None:
    """Cancel an alert: unsent deliveries stop, those already mailed get a short cancellation."""
    run(_cancel(settings(), ident, reason, yes, dry_run))
