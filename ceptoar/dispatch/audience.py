"""Who an alert goes to: area, subscriptions, test status and TLP 2.0.

A pure function of the registry's candidates and the notice, so it can be
tested without servers; the planner (`plan.py`) calls it for the
dispatcher and for the composer's preview alike.

- Area: empty means every organisation; a prefecture number takes in the
  prefecture and its municipalities; a six-digit code one organisation.
  An address that subscribes to a prefecture also gets what targets it.
- Test and exercise notices go only to addresses that asked for tests.
- Subscriptions: an address's minimum severity and categories; a critical
  alert reaches every primary and security address regardless. A
  low-severity notice is not mailed on its own to an address that takes
  such notices only in its digest (`ceptoar.model.digest`).
- TLP (`ceptoar.model.tlp`): CLEAR and GREEN reach every matching address;
  AMBER only the security role; AMBER+STRICT only an organisation's
  designated security contact; RED is held for an operator and reaches
  no one automatically. A cancel goes to those its thread mailed, as far
  as its own TLP allows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from ceptoar.model.digest import low_one_by_one
from ceptoar.model.notice import Notice, NoticeStatus, Severity, Tlp
from ceptoar.model.subscriber import Candidate, Role
from ceptoar.model.tlp import tlp_withholds
from ceptoar.registry.prefectures import PREFECTURE_NAMES

__all__ = ["Audience", "cancel_audience", "choose_audience", "hold_reason", "in_area"]

ALWAYS_GET_CRITICAL = frozenset({Role.PRIMARY, Role.SECURITY})


@dataclass(frozen=True)
class Audience:
    """The chosen addresses and, by reason, how many matching ones were left out."""

    recipients: list[Candidate]
    removed: Counter[str] = field(default_factory=Counter)

    @property
    def organisations(self) -> int:
        return len({c.code for c in self.recipients})

    @property
    def by_role(self) -> Counter[str]:
        return Counter(c.role for c in self.recipients)

    @property
    def by_prefecture(self) -> Counter[str]:
        """Addresses by the name of their prefecture."""
        return Counter(PREFECTURE_NAMES[c.prefecture] for c in self.recipients)


def hold_reason(notice: Notice) -> str | None:
    """Why a notice must wait for an operator instead of being fanned out, if it must."""
    if notice.tlp is Tlp.RED:
        return "TLP:RED is never fanned out automatically; an operator must release it"
    if notice.status is NoticeStatus.DRAFT:
        return "status draft: a draft is never delivered"
    if notice.status is NoticeStatus.SYSTEM:
        return "status system: a system message is not an alert"
    return None


def in_area(c: Candidate, area: Sequence[str]) -> bool:
    """Whether an address belongs to a notice's area (empty area: everyone)."""
    if not area:
        return True
    prefectures = {a for a in area if len(a) == 2} | {a[:2] for a in area if len(a) == 6}
    return c.code in area or c.prefecture in area or any(p in prefectures for p in c.prefectures)


def _subscription_excludes(c: Candidate, notice: Notice, severity: Severity) -> str | None:
    if severity is Severity.CRITICAL and c.role in ALWAYS_GET_CRITICAL:
        return None
    if severity.rank < Severity(c.min_severity).rank:
        return "below-min-severity"
    if c.categories and notice.category.value not in c.categories:
        return "category-not-subscribed"
    return None


def _one_by_one_excludes(c: Candidate, severity: Severity) -> str | None:
    """Why a notice that `c`'s subscription admits is still not mailed to it on its own: a low-severity
    notice that `c` takes only in its digest."""
    if severity is Severity.LOW and not low_one_by_one(c.digest, c.low_notices):
        return "low-in-digest"
    return None


def choose_audience(
    candidates: Sequence[Candidate],
    *,
    notice: Notice,
    severity: Severity,
    already: Collection[int] = (),
    for_digest: bool = False,
) -> Audience:
    """The addresses a notice goes to.

    `already` holds address ids that got an earlier alert of the same thread;
    they stay in the audience whatever the area and subscription say, but
    TLP and test status still apply. `for_digest`: the addresses whose
    subscription admits it, low-severity notices included whether they take
    those one by one or not (what a digest lists).
    """
    recipients: list[Candidate] = []
    removed: Counter[str] = Counter()
    testing = notice.status in (NoticeStatus.TEST, NoticeStatus.EXERCISE)
    for c in candidates:
        kept = c.address_id in already
        if not kept and not in_area(c, notice.area):
            continue
        reason = tlp_withholds(notice.tlp.value, role=c.role, contact=c.contact)
        if reason is None and testing and not c.wants_tests:
            reason = "not-a-test-subscriber"
        if reason is None and not kept:
            reason = _subscription_excludes(c, notice, severity)
            if reason is None and not for_digest:
                reason = _one_by_one_excludes(c, severity)
        if reason is None:
            recipients.append(c)
        else:
            removed[reason] += 1
    return Audience(recipients, removed)


def cancel_audience(candidates: Sequence[Candidate], *, notice: Notice, mailed: Collection[int]) -> Audience:
    """Who a cancel goes to: the addresses mailed in its thread, as far as the cancel's own TLP allows."""
    return choose_audience(
        [c for c in candidates if c.address_id in mailed],
        notice=notice,
        severity=Severity.LOW,  # unused: every address here is kept whatever it subscribed to
        already=mailed,
    )
