"""Sending what an operator composed: audited first, then published; and the cancel of an alert.

The CLI and the portal both go through here, so an alert sent or
cancelled from either is recorded the same way.
"""

from __future__ import annotations

from ceptoar.bus import Bus
from ceptoar.compose.draft import Draft
from ceptoar.config import Settings
from ceptoar.dispatch.plan import Plan
from ceptoar.model.alert import AlertView
from ceptoar.model.notice import Notice
from ceptoar.store import Actor, Store

__all__ = ["cancel_draft", "send_plan"]


def cancel_draft(parent: AlertView, reason: str | None = None) -> Draft:
    """The draft of a notice cancelling `parent` (a short notice in Japanese unless a reason is given)."""
    original = Notice.model_validate(parent.notice)
    return Draft(
        title=f"取消: {original.title}"[:300],
        summary=reason or f"先に送付した「{original.title}」（警報ID {parent.id}）を取り消します。",
        category=original.category.value,
        tlp=original.tlp.value,
        area=[],
        msg_type="cancel",
        references=[parent.id],
    )


async def send_plan(
    s: Settings, store: Store, p: Plan, action: str, parent: AlertView | None, who: Actor
) -> None:
    """Audit the operator's action, then publish it: nothing an operator sends goes out unrecorded."""
    n = p.notice
    detail = {
        "title": n.title,
        "severity": p.classification.severity.value,
        "rules": list(p.classification.rules),
        "tlp": n.tlp.value,
        "area": n.area,
        "audience": len(p.audience.recipients),
    }
    await store.audit.record(
        who, action, alert_id=parent.id if parent else None, notice_id=n.id, detail=detail
    )
    if n.severity_override is not None:
        computed = p.classification.computed
        await store.audit.record(
            who,
            "override",
            notice_id=n.id,
            detail={
                "severity": n.severity_override.value,
                "instead_of": computed.severity.value if computed else None,
            },
        )
    try:
        async with Bus.session(s, name="ceptoar-compose") as bus:
            await bus.publish_notice(
                n.model_dump_json(by_alias=True, exclude_none=True).encode(), fmt="json", key=n.key
            )
    except BaseException as exc:
        await store.audit.record(who, "unpublished", notice_id=n.id, detail={"error": repr(exc)[:300]})
        raise
