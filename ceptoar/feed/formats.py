"""Which format a document is, and the one way in: `parse_any`.

By content type first (JSON: application/json, application/csaf+json;
XML: application/cap+xml, application/xml, text/xml); with no content type
or application/octet-stream, by content. A JSON document is a ceptoar
notice when it names `schema`, a CSAF advisory when it has `document`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from ceptoar.errors import InvalidNotice
from ceptoar.feed.cap import parse_cap_notice
from ceptoar.feed.csaf import parse_csaf_notice
from ceptoar.feed.errors import MalformedNotice, UnsupportedFormat
from ceptoar.feed.notice import Notice, parse_notice

__all__ = ["CONTENT_TYPES", "Format", "Parsed", "detect", "parse_any"]

Format = Literal["json", "cap", "csaf"]
CONTENT_TYPES: dict[Format, str] = {
    "json": "application/json",
    "cap": "application/cap+xml",
    "csaf": "application/csaf+json",
}
_JSON = {"application/json", "application/csaf+json"}
_XML = {"application/cap+xml", "application/xml", "text/xml"}
_SNIFF = {"", "application/octet-stream"}
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Parsed:
    """A document accepted at the door: its format, the notice, the languages it speaks."""

    format: Format
    notice: Notice
    languages: list[str]


def detect(data: bytes, content_type: str | None) -> Format:
    """The format of `data`; UnsupportedFormat for a content type or content ceptoar does not take."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media in _XML:
        return "cap"
    if media not in _JSON and media not in _SNIFF:
        raise UnsupportedFormat(
            f"content type {media!r} is not accepted; send application/json, application/csaf+json, "
            "application/cap+xml or application/xml",
            field="Content-Type",
        )
    head = data.removeprefix(_BOM).lstrip()[:1]
    if media in _SNIFF and head == b"<":
        return "cap"
    if media in _SNIFF and head != b"{":
        raise UnsupportedFormat("neither XML nor a JSON object: cannot tell the format")
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedNotice(f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MalformedNotice(f"a notice is a JSON object, not {type(doc).__name__}")
    if "schema" in doc:
        return "json"
    if "document" in doc:
        return "csaf"
    raise InvalidNotice(
        "a JSON document needs 'schema' (a ceptoar notice) or 'document' (CSAF 2.0)", field="schema"
    )


def parse_any(data: bytes, content_type: str | None = None) -> Parsed:
    """Detect, validate and normalise a notice in any accepted format."""
    fmt = detect(data, content_type)
    if fmt == "cap":
        notice, languages = parse_cap_notice(data)
    elif fmt == "csaf":
        notice, languages = parse_csaf_notice(data)
    else:
        notice = parse_notice(data)
        languages = [notice.language, *notice.translations]
    return Parsed(fmt, notice, languages)
