"""What a notice will do: the one plan the dispatcher carries out and the composer previews.

`plan` is a pure function of the notice, the severity rules, the registry's
candidates and what the store knows of the thread the notice joins
(`Thread`, read by `ceptoar.dispatch.thread.load_thread`). It decides the
severity and the rules that gave it, whether the alert is held and why,
which thread it joins, who it goes to (and who not, by reason), what each
recipient was mailed before in the thread (In-Reply-To and References),
and which unsent deliveries a cancel stops. A preview is therefore, by
construction, what would be sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ceptoar.dispatch.audience import Audience, cancel_audience, choose_audience, hold_reason
from ceptoar.dispatch.rules import Classification, RuleSet, classify
from ceptoar.model.alert import AlertView
from ceptoar.model.notice import MsgType, Notice
from ceptoar.model.states import AlertState
from ceptoar.model.subscriber import Candidate
from ceptoar.store.alerts import Lifecycle

__all__ = ["Plan", "Thread", "plan", "plan_in_chunks"]


@dataclass(frozen=True)
class Thread:
    """What the store knows of the thread an update or cancel joins; empty for a new alert."""

    # The alert the notice refers to (its latest reference).
    parent: AlertView | None = None
    # Why the notice's references cannot be followed: it is held with this reason.
    refused: str | None = None
    # Addresses with a delivery in the thread that was not cancelled.
    members: Collection[int] = frozenset()
    # Per address, the Message-IDs it was sent (or is being sent) in the thread, oldest first.
    history: Mapping[int, Sequence[str]] = field(default_factory=dict)
    # Deliveries of the thread not yet sent, which a cancel stops.
    unsent: int = 0

    @property
    def id(self) -> str | None:
        """The thread's id: the id of its first alert."""
        if self.parent is None:
            return None
        return self.parent.thread_id or self.parent.id


@dataclass(frozen=True)
class Plan:
    """Everything the dispatcher will do with a notice, decided before anything is stored."""

    notice: Notice
    classification: Classification
    lifecycle: Lifecycle
    audience: Audience
    # Per recipient mailed before in the thread, the Message-IDs its new mail refers to.
    threading: dict[int, list[str]] = field(default_factory=dict)
    # The thread whose unsent deliveries this cancel stops, and how many there are as planned.
    cancels: str | None = None
    unsent: int = 0

    @property
    def held(self) -> str | None:
        """Why the alert waits for an operator and reaches no one, if it does."""
        return self.lifecycle.held_reason if self.lifecycle.state == AlertState.HELD else None


def plan(notice: Notice, rules: RuleSet, candidates: Sequence[Candidate], thread: Thread) -> Plan:
    """What the notice will do, given the registry's candidates and the thread it joins."""
    result = classify(notice, rules)
    if thread.refused is not None:
        held = Lifecycle(state=AlertState.HELD, held_reason=thread.refused)
        return Plan(notice, result, held, Audience([]))
    parent_id = thread.parent.id if thread.parent is not None else None
    reason = hold_reason(notice)
    lifecycle = Lifecycle(
        state=AlertState.HELD if reason else AlertState.ACTIVE,
        held_reason=reason,
        thread_id=thread.id,
        parent_id=parent_id,
    )
    if reason is not None:
        return Plan(notice, result, lifecycle, Audience([]))
    severity = result.severity
    if thread.id is None:
        return Plan(notice, result, lifecycle, choose_audience(candidates, notice=notice, severity=severity))
    if notice.msg_type is MsgType.CANCEL:
        audience = cancel_audience(candidates, notice=notice, mailed=thread.history.keys())
        cancels, unsent = thread.id, thread.unsent
    else:
        audience = choose_audience(candidates, notice=notice, severity=severity, already=thread.members)
        cancels, unsent = None, 0
    threading = {
        c.address_id: list(thread.history[c.address_id])
        for c in audience.recipients
        if c.address_id in thread.history
    }
    return Plan(notice, result, lifecycle, audience, threading, cancels, unsent)


async def plan_in_chunks(
    notice: Notice, rules: RuleSet, chunks: AsyncIterable[Sequence[Candidate]], thread: Thread
) -> tuple[Plan, list[int]]:
    """`plan` over a registry read a chunk at a time, holding one chunk's candidates at once.

    An audience is chosen address by address, so the plan is the one
    `plan` makes of all the candidates, except that it keeps no Candidate:
    its audience says only who was left out and why, and the recipients'
    address ids, in address order, are returned beside it. Close `chunks`
    after the call: a held notice stops reading it early.
    """
    ids: list[int] = []
    removed: Counter[str] = Counter()
    threading: dict[int, list[str]] = {}
    planned = None
    async for chunk in chunks:
        planned = plan(notice, rules, chunk, thread)
        if planned.held is not None:
            break  # it reaches no one, whatever the rest of the registry holds
        ids.extend(c.address_id for c in planned.audience.recipients)
        removed.update(planned.audience.removed)
        threading.update(planned.threading)
    if planned is None:
        return plan(notice, rules, [], thread), ids
    return replace(planned, audience=Audience([], removed), threading=threading), ids
