"""Feed formats: everything a source sends becomes one `Notice`."""

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
