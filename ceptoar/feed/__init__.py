"""Feed formats: everything a source sends becomes one `Notice`.

The ceptoar JSON notice (`notice.py`), OASIS CAP 1.2 (`cap.py`) and CSAF 2.0
(`csaf.py`); `formats.parse_any` detects which and parses it.
"""

from ceptoar.feed.notice import (
    NOTICE_SCHEMA,
    OPERATOR_SOURCE,
    CapRating,
    Category,
    Cvss,
    MsgType,
    Notice,
    NoticeStatus,
    Severity,
    Tlp,
    parse_notice,
)

__all__ = [
    "NOTICE_SCHEMA",
    "OPERATOR_SOURCE",
    "CapRating",
    "Category",
    "Cvss",
    "MsgType",
    "Notice",
    "NoticeStatus",
    "Severity",
    "Tlp",
    "parse_notice",
]
