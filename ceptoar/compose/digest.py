"""Composing, previewing and sending an issue of the security mail magazine.

An issue lists the period's notices that each address's subscription and
role admit, exactly as the audience of an alert is chosen
(`ceptoar.dispatch.audience.choose_audience`, TLP included): an address
sees only what it could have been mailed, low-severity notices only when
it takes them in its digest. Addresses that admit the same items share a
variant: each variant is rendered once per language, as an alert is.

Sending stores the issue as an alert of source `digest` with one delivery
per address (always the bulk lane) and publishes their jobs; the alert's
notice id `KIND-PERIOD` is unique, so a second send of a period sends
nothing, from any host.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ceptoar.bus import Bus, Lane
from ceptoar.config import Settings
from ceptoar.dispatch.audience import choose_audience
from ceptoar.errors import CeptoarError, ConfigError
from ceptoar.log import get_logger
from ceptoar.model.digest import DigestKind, Period, Schedule, low_in_digest
from ceptoar.model.notice import LANGUAGES, Notice, Severity
from ceptoar.model.subscriber import Candidate
from ceptoar.store import DIGEST_SOURCE, Actor, DigestIssue, Store
from ceptoar.store.alerts import Lifecycle

__all__ = [
    "DigestError",
    "Planned",
    "Sent",
    "article_of",
    "issue_notice",
    "plan_issue",
    "send_due",
    "send_issue",
]

log = get_logger(__name__)


class DigestError(CeptoarError, ValueError):
    """An issue that cannot be composed or sent as asked, and why."""


def article_of(path: Path) -> dict[str, str]:
    """An editor's article from a Markdown file: its first `# ` heading is the title."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DigestError(f"article {path}: cannot be read as UTF-8 text ({exc})") from exc
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("# ") or not lines[0][2:].strip():
        raise DigestError(f"article {path}: the first line must be its title, as '# Title'")
    if len(text) > 100_000:
        raise DigestError(f"article {path}: {len(text)} characters; an article may have 100,000")
    return {"title": lines[0][2:].strip(), "markdown": "\n".join(lines[1:]).strip() + "\n"}


@dataclass(frozen=True)
class Planned:
    """What an issue will be: its items, the variants (each a selection of items and its addresses)."""

    period: Period
    items: list[dict[str, Any]]
    # Per variant: the items' indexes, and the address ids that get it.
    variants: list[tuple[tuple[int, ...], list[int]]]
    recipients: list[Candidate]

    def content(self, issue: DigestIssue) -> dict[str, Any]:
        """What the issue's alert carries, for rendering each variant."""
        return {
            "kind": issue.kind,
            "period": issue.period,
            "number": issue.number,
            "articles": issue.articles,
            "items": self.items,
            "variants": [{"items": list(items), "addresses": ids} for items, ids in self.variants],
        }


def _item(alert: Any, public_url: str | None) -> dict[str, Any]:
    notice = Notice.model_validate(alert.notice)
    texts = {lang: notice.text_for(lang) for lang in LANGUAGES}
    link = (
        f"{public_url}/portal/alerts/{alert.id}"
        if public_url
        else (str(notice.links[0]) if notice.links else None)
    )
    return {
        "alert_id": alert.id,
        "created_at": alert.created_at.isoformat(),
        "severity": alert.severity,
        "category": notice.category.value,
        "tlp": alert.tlp,
        "msg_type": alert.msg_type,
        "text": {lang: {"title": t.title, "summary": t.summary} for lang, t in texts.items()},
        "link": link,
    }


async def plan_issue(store: Store, settings: Settings, period: Period) -> Planned:
    """Who gets the period's issue and which items each sees."""
    alerts = await store.digests.items(period.start.astimezone(UTC), period.end.astimezone(UTC))
    recipients = [c for c in await store.subscribers.candidates() if c.digest == period.kind]
    chosen: dict[int, list[int]] = {c.address_id: [] for c in recipients}
    for index, alert in enumerate(alerts):
        severity = Severity(alert.severity)
        audience = choose_audience(
            recipients, notice=Notice.model_validate(alert.notice), severity=severity, for_digest=True
        )
        for c in audience.recipients:
            if severity is not Severity.LOW or low_in_digest(c.digest, c.low_notices):
                chosen[c.address_id].append(index)
    by_selection: dict[tuple[int, ...], list[int]] = {}
    for address_id, indexes in chosen.items():
        by_selection.setdefault(tuple(indexes), []).append(address_id)
    variants = sorted(by_selection.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    items = [_item(a, settings.public_url) for a in alerts]
    return Planned(period, items, variants, recipients)


def issue_notice(issue: DigestIssue, period: Period, now: datetime) -> Notice:
    """The notice an issue is sent as: source `digest`, id `KIND-PERIOD`, low, TLP:CLEAR."""
    kind = "週刊" if issue.kind == DigestKind.WEEKLY else "月刊"
    return Notice.model_validate(
        {
            "schema": "ceptoar.notice/1",
            "source": DIGEST_SOURCE,
            "id": issue.notice_id,
            "sent": now.isoformat(),
            "title": f"セキュリティ通信（{kind}）第{issue.number}号 {period.label('ja')}",
            "summary": f"{period.label('ja')}の警報・注意喚起のまとめと解説です。",
            "category": "advisory",
            "severity": "low",
            "tlp": "CLEAR",
            "translations": {
                "en": {
                    "title": f"Security digest ({issue.kind}) No. {issue.number}, {period.label('en')}",
                    "summary": f"The alerts and advisories of {period.label('en')}, with commentary.",
                }
            },
        }
    )


@dataclass(frozen=True)
class Sent:
    """What sending an issue did: its alert, and whether this call sent it (False: it was sent before)."""

    alert_id: str
    sent_now: bool
    addresses: int


async def send_issue(
    settings: Settings,
    store: Store,
    bus: Bus | None,
    period: Period,
    *,
    who: Actor,
    articles: Sequence[dict[str, str]] = (),
) -> Sent:
    """Send the period's issue once: compose it (with `articles`) if it was never composed, store it as
    an alert with a delivery per subscribed address, publish the jobs on the bulk lane."""
    if settings.public_url is None:
        raise DigestError(
            "CEPTOAR_PUBLIC_URL must be set: digest mail carries a one-click unsubscribe link (RFC 8058)"
        )
    issue = await store.digests.get(period.kind, period.name)
    if issue is None:
        issue = await store.digests.compose(period.kind, period.name, list(articles), who=who)
    if issue.state == "sent" and issue.alert_id is not None:
        return Sent(issue.alert_id, False, 0)
    planned = await plan_issue(store, settings, period)
    content = planned.content(issue)
    notice = issue_notice(issue, period, datetime.now(UTC))
    variants = {a: n for n, (_, ids) in enumerate(planned.variants) for a in ids}
    stored = await store.alerts.create(
        notice=notice,
        payload=json.dumps(
            notice.model_dump(mode="json", by_alias=True, exclude_none=True), ensure_ascii=False
        ),
        fmt="json",
        severity=Severity.LOW.value,
        rules=["digest"],
        audience=sorted(variants),
        message_id_domain=settings.message_id_domain,
        lifecycle=Lifecycle(),
        variants=variants,
    )
    # Kept before any mail goes: the mailer renders each variant from it.
    recorded = await store.digests.mark_sent(issue, stored.alert_id, content, who=who)
    if stored.duplicate or not recorded:
        return Sent(stored.alert_id, False, 0)
    if bus is not None and stored.delivery_ids:
        await bus.publish_jobs(stored.delivery_ids, lane=Lane.BULK, batch=settings.publish_batch)
        await store.alerts.mark_published(stored.alert_id)
    log.info(
        "digest.sent",
        alert_id=stored.alert_id,
        kind=period.kind.value,
        period=period.name,
        addresses=len(variants),
    )
    return Sent(stored.alert_id, True, len(variants))


async def send_due(
    settings: Settings, store: Store, bus: Bus | None, *, now: datetime, who: Actor
) -> list[Sent]:
    """Send each kind's latest ended period's issue if the schedule fired in the last day and some address
    takes that kind; an issue sent already is left alone, so every host may call this."""
    try:
        schedule = Schedule.parse(settings.digest_schedule)
    except ValueError as exc:
        raise ConfigError(f"digest_schedule: {exc}") from exc
    if schedule.fired_between(now - timedelta(days=1), now) is None:
        return []
    kinds = {c.digest for c in await store.subscribers.candidates()}
    done = []
    for kind in (DigestKind.MONTHLY, DigestKind.WEEKLY):
        if kind not in kinds:
            continue
        period = Period.last_ended(kind, now)
        issue = await store.digests.get(kind, period.name)
        if issue is not None and issue.state == "sent":
            continue
        done.append(await send_issue(settings, store, bus, period, who=who))
    return done
