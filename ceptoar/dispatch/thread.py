"""Reading, for `plan`, what the store knows of the thread a notice joins."""

from __future__ import annotations

from datetime import datetime

from ceptoar.dispatch.plan import Thread
from ceptoar.feed.cap import cap_source
from ceptoar.model.alert import AlertView
from ceptoar.model.notice import OPERATOR_SOURCE, MsgType, Notice
from ceptoar.store import Store

__all__ = ["load_thread"]


async def load_thread(store: Store, notice: Notice) -> Thread:
    """The thread an update or cancel joins (empty for a new alert), or why its references fail."""
    parent, refused = await _parent(store, notice)
    if parent is None:
        return Thread(refused=refused)
    thread = parent.thread_id or parent.id
    return Thread(
        parent=parent,
        members=await store.threads.members(thread),
        history=await store.threads.history(thread),
        unsent=await store.threads.unsent(thread) if notice.msg_type is MsgType.CANCEL else 0,
    )


async def _parent(store: Store, notice: Notice) -> tuple[AlertView | None, str | None]:
    """The alert an update or cancel refers to (its latest reference), or why it cannot be found."""
    if notice.msg_type is MsgType.ALERT:
        return None, None
    parent = None
    for source, ident, sent in _references(notice):
        if source != notice.source:
            return None, (
                f"refers to notice {ident} of another sender ({source}); a sender may update or "
                "cancel only its own notices (ceptoar's rule)"
            )
        found = await store.alerts.find(notice.source, ident)
        if found is None and notice.source == OPERATOR_SOURCE:
            # An operator refers to any feed's alert by its alert id.
            found = await store.alerts.get(ident)
        if found is None:
            return None, f"refers to unknown notice {notice.source}:{ident}"
        if sent is not None and datetime.fromisoformat(found.notice["sent"]) != sent:
            return None, (
                f"refers to {notice.source}:{ident} sent {sent.isoformat()}, but the notice received "
                f"with that id was sent {found.notice['sent']}"
            )
        parent = found
    return parent, None


def _references(notice: Notice) -> list[tuple[str, str, datetime | None]]:
    """(source key, id, sent) of each notice a notice refers to; a CAP message says all three."""
    if not notice.cap_references:
        return [(notice.source, ident, None) for ident in notice.references]
    found = []
    for ref in notice.cap_references:
        try:
            sent: datetime | None = datetime.fromisoformat(ref.sent)
        except ValueError:
            sent = None  # not a time ceptoar can compare: the sender and identifier decide
        found.append((cap_source(ref.sender), ref.identifier, sent))
    return found
