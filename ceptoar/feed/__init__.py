"""Feed formats: everything a source sends becomes one `Notice`."""

from ceptoar.feed.notice import (
    NOTICE_SCHEMA,
    Category,
    Cvss,
    MsgType,
    Notice,
    Severity,
    Tlp,
    parse_notice,
)

__all__ = [
    "NOTICE_SCHEMA",
    "Category",
    "Cvss",
    "MsgType",
    "Notice",
    "Severity",
    "Tlp",
    "parse_notice",
]
