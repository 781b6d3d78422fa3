"""ceptoar's domain model, at the bottom of the stack: it imports nothing of ceptoar but `ceptoar.text`.

`notice` (the notice and the values it carries), `codes` (local government
codes), `subscriber` (an address as an audience is chosen from it), `alert`
(the alert as it is rendered and reported, and its status), `states` (alert
and delivery states) and `tlp` (who may see what).
"""

from ceptoar.model.alert import AlertStatus, AlertView
from ceptoar.model.notice import (
    LANGUAGES,
    NOTICE_SCHEMA,
    OPERATOR_SOURCE,
    CapRating,
    Category,
    Cvss,
    MsgType,
    Notice,
    NoticeStatus,
    NoticeText,
    Severity,
    Tlp,
)
from ceptoar.model.states import CLAIMABLE, MAILED, OPEN, AlertState, DeliveryState
from ceptoar.model.subscriber import Candidate, Role

__all__ = [
    "CLAIMABLE",
    "LANGUAGES",
    "MAILED",
    "NOTICE_SCHEMA",
    "OPEN",
    "OPERATOR_SOURCE",
    "AlertState",
    "AlertStatus",
    "AlertView",
    "Candidate",
    "CapRating",
    "Category",
    "Cvss",
    "DeliveryState",
    "MsgType",
    "Notice",
    "NoticeStatus",
    "NoticeText",
    "Role",
    "Severity",
    "Tlp",
]
