"""What an alert will do before it is sent: the dispatcher's own plan, and the mail one organisation gets."""

from __future__ import annotations

from dataclasses import dataclass

from ceptoar.dispatch.plan import Plan, plan
from ceptoar.dispatch.rules import RuleSet
from ceptoar.dispatch.thread import load_thread
from ceptoar.model.alert import AlertView
from ceptoar.model.notice import Notice
from ceptoar.model.subscriber import Candidate, Role
from ceptoar.render import Renderer
from ceptoar.store import Store

__all__ = ["MailPreview", "preview", "preview_mail"]

# The id a previewed alert's mail carries: the store gives it its own once it is dispatched.
PREVIEW_ID = "(preview)"


async def preview(store: Store, rules: RuleSet, notice: Notice) -> Plan:
    """The plan the dispatcher would carry out for `notice` now, from the same store and rules."""
    candidates = await store.subscribers.candidates()
    return plan(notice, rules, candidates, await load_thread(store, notice))


@dataclass(frozen=True)
class MailPreview:
    """One organisation's copy: to which address, its subject, text and HTML."""

    address: str
    subject: str
    text: str
    html: str


def preview_mail(p: Plan, code: str, renderer: Renderer) -> MailPreview | None:
    """The mail as organisation `code` will receive it (its primary address first); None if it gets none."""
    theirs: list[Candidate] = sorted(
        (c for c in p.audience.recipients if c.code == code),
        key=lambda c: (c.role != Role.PRIMARY, c.address_id),
    )
    if not theirs:
        return None
    who = theirs[0]
    c = p.classification
    alert = AlertView.of_notice(p.notice, severity=c.severity.value, rules=c.rules, id=PREVIEW_ID)
    rendered = renderer.render(alert, who.language)
    return MailPreview(who.email, rendered.subject, rendered.text, rendered.html)
