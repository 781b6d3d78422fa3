"""What an alert will do before it is sent: who gets it, who does not and why, and the mail itself."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from ceptoar.dispatch.audience import Audience, cancel_audience, choose_audience, hold_reason
from ceptoar.dispatch.rules import Classification, RuleSet, classify
from ceptoar.model.alert import AlertView
from ceptoar.model.notice import MsgType, Notice
from ceptoar.model.subscriber import Candidate, Role
from ceptoar.registry.prefectures import PREFECTURES
from ceptoar.render import Renderer
from ceptoar.store import Store

__all__ = ["MailPreview", "Preview", "preview", "preview_mail"]

_PREF_NAMES = {p.number: p.name for p in PREFECTURES}


@dataclass(frozen=True)
class Preview:
    """The alert as the dispatcher would see it now."""

    notice: Notice
    classification: Classification
    audience: Audience
    held: str | None
    unsent_to_cancel: int

    @property
    def organisations(self) -> int:
        return len({c.code for c in self.audience.recipients})

    @property
    def by_role(self) -> Counter[str]:
        return Counter(c.role for c in self.audience.recipients)

    @property
    def by_prefecture(self) -> Counter[str]:
        return Counter(_PREF_NAMES[c.prefecture] for c in self.audience.recipients)


async def preview(store: Store, rules: RuleSet, notice: Notice, parent: AlertView | None) -> Preview:
    """Classify the notice and choose its audience exactly as the dispatcher will."""
    result = classify(notice, rules)
    held = hold_reason(notice)
    candidates = await store.subscribers.candidates()
    unsent = 0
    if held is not None:
        audience = Audience([])
    elif parent is None:
        audience = choose_audience(candidates, notice=notice, severity=result.severity)
    else:
        thread = parent.thread_id or parent.id
        if notice.msg_type is MsgType.CANCEL:
            mailed = set(await store.threads.history(thread))
            audience = cancel_audience(candidates, notice=notice, mailed=mailed)
            counts = await store.alerts.counts(parent.id)
            unsent = counts.get("queued", 0) + counts.get("deferred", 0)
        else:
            already = await store.threads.members(thread)
            audience = choose_audience(candidates, notice=notice, severity=result.severity, already=already)
    return Preview(notice, result, audience, held, unsent)


@dataclass(frozen=True)
class MailPreview:
    """One organisation's copy: to which address, its subject, text and HTML."""

    address: str
    subject: str
    text: str
    html: str


def preview_mail(p: Preview, code: str, renderer: Renderer) -> MailPreview | None:
    """The mail as organisation `code` will receive it (its primary address first); None if it gets none."""
    theirs: list[Candidate] = sorted(
        (c for c in p.audience.recipients if c.code == code),
        key=lambda c: (c.role != Role.PRIMARY, c.address_id),
    )
    if not theirs:
        return None
    who = theirs[0]
    alert = AlertView(
        id="(preview)",
        source=p.notice.source,
        source_id=p.notice.id,
        msg_type=p.notice.msg_type.value,
        severity=p.classification.severity.value,
        severity_rules=list(p.classification.rules),
        tlp=p.notice.tlp.value,
        title=p.notice.title,
        notice=p.notice.model_dump(mode="json", by_alias=True),
        created_at=datetime.now(UTC),
        jobs_published_at=None,
    )
    rendered = renderer.render(alert, who.language)
    return MailPreview(who.email, rendered.subject, rendered.text, rendered.html)
