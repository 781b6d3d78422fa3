"""Which format a document is, and the one way in: `parse_any`.

By content type first (JSON: application/json, application/csaf+json;
XML: application/cap+xml, application/xml, text/xml); with no content type
or application/octet-stream, by content. A JSON document is a ceptoar
notice when it names `schema`, a CSAF advisory when it has `document`.

`peek_key` reads a document's dedupe key (source, id) without validating
it, so a replay can be answered before the document is checked again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ceptoar.errors import InvalidNotice
from ceptoar.feed.cap import peek_cap_key
from ceptoar.feed.cap_notice import parse_cap_notice
from ceptoar.feed.csaf import csaf_key, csaf_notice
from ceptoar.feed.errors import MalformedNotice, UnsupportedFormat
from ceptoar.feed.jsonsafe import load_json
from ceptoar.feed.notice import notice_from_json
from ceptoar.model.notice import Format, Notice

__all__ = ["Key", "Parsed", "detect", "parse_any", "payload_text", "peek_key"]

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


def _sniff(data: bytes, content_type: str | None) -> Literal["xml", "json"]:
    media = (content_type or "").split(";")[0].strip().lower()
    if media in _XML:
        return "xml"
    if media not in _JSON and media not in _SNIFF:
        raise UnsupportedFormat(
            f"content type {media!r} is not accepted; send application/json, application/csaf+json, "
            "application/cap+xml or application/xml",
            field="Content-Type",
        )
    if media in _SNIFF:
        head = data.removeprefix(_BOM).lstrip()[:1]
        if head == b"<" or data.startswith(_WIDE_MARKS):
            return "xml"
        if head != b"{":
            raise UnsupportedFormat("neither XML nor a JSON object: cannot tell the format")
    return "json"


def _json_format(doc: Any) -> Format:
    if not isinstance(doc, dict):
        raise MalformedNotice(f"a notice is a JSON object, not {type(doc).__name__}")
    if "schema" in doc:
        return "json"
    if "document" in doc:
        return "csaf"
    raise InvalidNotice(
        "a JSON document needs 'schema' (a ceptoar notice) or 'document' (CSAF 2.0)", field="schema"
    )


def detect(data: bytes, content_type: str | None) -> Format:
    """The format of `data`; UnsupportedFormat for a content type or content ceptoar does not take."""
    if _sniff(data, content_type) == "xml":
        return "cap"
    return _json_format(load_json(data))


def parse_any(data: bytes, content_type: str | None = None) -> Parsed:
    """Detect, validate and normalise a notice in any accepted format."""
    if _sniff(data, content_type) == "xml":
        notice, languages = parse_cap_notice(data)
        return Parsed("cap", notice, languages)
    doc = load_json(data)
    if _json_format(doc) == "csaf":
        notice, languages = csaf_notice(doc)
        return Parsed("csaf", notice, languages)
    notice = notice_from_json(doc)
    return Parsed("json", notice, [notice.language, *notice.translations])


def payload_text(data: bytes) -> str:
    """A document as text for the record, losing nothing.

    UTF-8, or UTF-16 and UTF-32 as their byte order mark (or a leading
    '<') says; anything else byte for byte as ISO-8859-1, which any byte
    sequence is and from which the bytes can be had back.
    """
    for encoding, marks in _WIDE_ENCODINGS:
        if data.startswith(marks):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                break
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


_WIDE_ENCODINGS = (
    ("utf-32", (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")),
    ("utf-16", (b"\xff\xfe", b"\xfe\xff")),
    ("utf-16-le", (b"<\x00",)),
    ("utf-16-be", (b"\x00<",)),
)
# How an XML document in UTF-16 or UTF-32 starts: a byte order mark, or '<'.
_WIDE_MARKS = tuple(mark for _, marks in _WIDE_ENCODINGS for mark in marks)


@dataclass(frozen=True)
class Key:
    """What a document would be stored under, read without validating it, and when it says it was sent."""

    format: Format
    source: str
    id: str
    sent: datetime | None


def _time(value: Any) -> datetime | None:
    try:
        sent = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return sent if sent is not None and sent.tzinfo is not None else None


def peek_key(data: bytes, content_type: str | None = None) -> Key | None:
    """The format, source, id and sent time of a document, read without validating it; None if unclear.

    Only for answering a replay early: a document it reads a key from may
    still be refused by `parse_any`.
    """
    try:
        if _sniff(data, content_type) == "xml":
            found = peek_cap_key(data)
            return None if found is None else Key("cap", found[0], found[1], _time(found[2]))
        doc = load_json(data)
        if _json_format(doc) == "csaf":
            source, ident = csaf_key(doc)
            return Key("csaf", source, ident, _time(doc["document"]["tracking"].get("current_release_date")))
        source, ident = doc["source"], doc["id"]
        if isinstance(source, str) and isinstance(ident, str):
            return Key("json", source, ident, _time(doc.get("sent")))
    except (InvalidNotice, KeyError, TypeError, ValueError, AttributeError):
        pass
    return None
