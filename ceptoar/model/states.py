"""Where an alert stands, and where each of its deliveries stands."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CLAIMABLE", "MAILED", "OPEN", "AlertState", "DeliveryState"]


class AlertState(StrEnum):
    """An alert is sent to its audience, held for an operator, or cancelled with its thread."""

    ACTIVE = "active"
    # Reaches no one until an operator releases it (`ceptoar release`).
    HELD = "held"
    CANCELLED = "cancelled"


class DeliveryState(StrEnum):
    """Where one mail to one address stands."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    BOUNCED = "bounced"
    ACKNOWLEDGED = "acknowledged"
    CANCELLED = "cancelled"


# A mailer may claim these; `sending` too once its lease has run out.
CLAIMABLE = (DeliveryState.QUEUED, DeliveryState.DEFERRED)
# Not finished: somebody still owes this delivery an attempt.
OPEN = (DeliveryState.QUEUED, DeliveryState.SENDING, DeliveryState.DEFERRED)
# The address has the mail (a bounce may follow later).
MAILED = (DeliveryState.SENT, DeliveryState.ACKNOWLEDGED)
