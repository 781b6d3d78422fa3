"""Where an alert stands, and where each of its deliveries stands."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CLAIMABLE", "MAILED", "OPEN", "TRANSITIONS", "AlertState", "DeliveryState", "allowed", "sources"]


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


_S = DeliveryState

# Every move a delivery may make, by the state it leaves; a move not listed is refused (the row is
# left as it is). The store's conditional UPDATEs take their WHERE from here (`sources`).
TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    # Claimed by a mailer, cancelled with its thread, or failed when it came back too often.
    _S.QUEUED: frozenset({_S.SENDING, _S.CANCELLED, _S.FAILED}),
    # The attempt's outcome. An answer that arrives during the send is kept and applied when the
    # outcome is written (`sent` becomes `acknowledged`, the relay's reply kept), so nothing but the
    # outcome moves a row out of `sending`. A relay that could not be reached gives the claim back
    # (`queued`); a dead holder's lapsed lease lets another worker claim it (`sending` again) or a
    # cancel stop it.
    _S.SENDING: frozenset(
        {_S.SENT, _S.ACKNOWLEDGED, _S.DEFERRED, _S.FAILED, _S.QUEUED, _S.CANCELLED, _S.SENDING}
    ),
    _S.DEFERRED: frozenset({_S.SENDING, _S.CANCELLED, _S.FAILED, _S.BOUNCED, _S.QUEUED}),
    _S.SENT: frozenset({_S.ACKNOWLEDGED, _S.BOUNCED, _S.QUEUED}),
    # A bounce after an answer leaves the answer standing; an operator's resend starts a new series.
    _S.ACKNOWLEDGED: frozenset({_S.QUEUED}),
    _S.BOUNCED: frozenset({_S.QUEUED}),
    _S.FAILED: frozenset({_S.QUEUED}),
    _S.CANCELLED: frozenset(),
}


def allowed(source: DeliveryState, target: DeliveryState) -> bool:
    """Whether a delivery in `source` may move to `target`."""
    return target in TRANSITIONS[source]


def sources(target: DeliveryState) -> tuple[DeliveryState, ...]:
    """The states a delivery may reach `target` from: the WHERE of the UPDATE that moves it there."""
    return tuple(s for s in DeliveryState if target in TRANSITIONS[s])
