"""Escalation: what happens to an organisation that has not answered a serious alert in time.

At the first deadline after the alert was made (per severity, e.g.
critical 30 minutes, high 4 hours) the organisation is *reminded*: its
addresses that had the alert get a reminder, and its backup addresses get
the alert. At the second deadline it is listed for a phone *call*. Each
step happens once per organisation and alert, however many processes look.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum

__all__ = ["Purpose", "Step", "due_steps"]


class Purpose(StrEnum):
    """What a delivery's mail is for."""

    ALERT = "alert"
    # The alert again, to an address that had it, asking for an answer.
    REMINDER = "reminder"
    # The alert to an organisation's backup address, because its other addresses did not answer.
    BACKUP = "backup"


class Step(StrEnum):
    """An escalation step."""

    REMINDED = "reminded"
    CALL = "call"


def due_steps(
    severity: str,
    created_at: datetime,
    now: datetime,
    *,
    remind_after: Mapping[str, float],
    call_after: Mapping[str, float],
) -> list[Step]:
    """The steps whose deadline (minutes after the alert was made) has passed for an alert of `severity`."""
    steps = []
    for step, deadlines in ((Step.REMINDED, remind_after), (Step.CALL, call_after)):
        minutes = deadlines.get(severity)
        if minutes is not None and now >= created_at + timedelta(minutes=minutes):
            steps.append(step)
    return steps
