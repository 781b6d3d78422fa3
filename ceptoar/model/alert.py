"""The alert as rendering, reports and operators see it, and its status by delivery state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from ceptoar.model.notice import Notice
from ceptoar.model.states import OPEN, AlertState, DeliveryState

__all__ = ["AlertStatus", "AlertView", "Organisations"]


@dataclass(frozen=True)
class AlertView:
    """An alert as rendering and reporting need it."""

    id: str
    source: str
    source_id: str
    msg_type: str
    severity: str
    severity_rules: list[str]
    tlp: str
    title: str
    notice: dict[str, Any]
    created_at: datetime
    jobs_published_at: datetime | None
    state: str = AlertState.ACTIVE
    held_reason: str | None = None
    thread_id: str | None = None
    parent_id: str | None = None
    status: str = "actual"
    expires_at: datetime | None = None
    # The operator who released it from being held, to an audience of their choosing.
    released_by: str | None = None

    @classmethod
    def of_notice(
        cls,
        notice: Notice,
        *,
        severity: str,
        rules: Sequence[str],
        id: str,
        created_at: datetime | None = None,
    ) -> AlertView:
        """The alert a notice becomes once classified, before the store gives it an id of its own."""
        return cls(
            id=id,
            source=notice.source,
            source_id=notice.id,
            msg_type=notice.msg_type.value,
            severity=severity,
            severity_rules=list(rules),
            tlp=notice.tlp.value,
            title=notice.title,
            notice=notice.model_dump(mode="json", by_alias=True),
            created_at=created_at or datetime.now(UTC),
            jobs_published_at=None,
            status=notice.status.value,
            expires_at=notice.expires,
        )

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class Organisations(BaseModel):
    """An alert's organisations: how many it went to, which answered (by latest answer), the rest."""

    total: int = 0
    answered: int = 0
    by_answer: dict[str, int] = {}
    # Organisations with a bounced delivery, and organisations with no answer yet.
    bounced: int = 0
    silent: int = 0
    # Organisations reminded (their backup addresses sent the alert), and listed for a phone call.
    escalated: int = 0
    to_call: int = 0


class AlertStatus(BaseModel):
    """An alert (or a notice not yet made one) and its deliveries by state: what operators and feeds ask."""

    notice_id: str
    source: str
    alert_id: str | None
    state: str
    title: str | None = None
    severity: str | None = None
    rules: list[str] = []
    tlp: str | None = None
    held_reason: str | None = None
    thread_id: str | None = None
    created_at: datetime | None = None
    # A notice accepted at the HTTP endpoint and refused by the dispatcher afterwards (state `rejected`): why.
    rejected_reason: str | None = None
    rejected_field: str | None = None
    total: int = 0
    counts: dict[str, int] = {}
    organisations: Organisations = Organisations()

    @classmethod
    def of(
        cls, alert: AlertView, counts: Mapping[str, int], organisations: Organisations | None = None
    ) -> AlertStatus:
        """The status of `alert`, given how many of its deliveries are in each state."""
        full = {state.value: counts.get(state.value, 0) for state in DeliveryState}
        return cls(
            notice_id=alert.source_id,
            source=alert.source,
            alert_id=alert.id,
            state=alert.state,
            title=alert.title,
            severity=alert.severity,
            rules=alert.severity_rules,
            tlp=alert.tlp,
            held_reason=alert.held_reason,
            thread_id=alert.thread_id,
            created_at=alert.created_at,
            total=sum(full.values()),
            counts=full,
            organisations=organisations or Organisations(),
        )

    @property
    def open(self) -> int:
        """Deliveries somebody still owes an attempt: queued, sending or deferred."""
        return sum(self.counts.get(state.value, 0) for state in OPEN)

    @property
    def settled(self) -> bool:
        """Nothing more will happen without an operator: held, or no delivery still open."""
        return self.state == AlertState.HELD or self.open == 0
