"""OASIS CAP 1.2 alerts, parsed safely and validated against the official schema.

The parser resolves no entities, loads no DTD and opens no network
connection, and a document with a DOCTYPE anywhere is refused by what the
parser itself read, whatever the encoding. Every document is validated
against the official CAP 1.2 schema shipped in `schemas/CAP-v1.2.xsd`.
Older versions are refused with a message naming what is accepted. An
enveloped XML signature (`<Signature>` in the xmldsig namespace, allowed
by the schema) does not hinder parsing. What a document becomes as a
notice is `cap_notice.py`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lxml import etree

from ceptoar.errors import InvalidNotice
from ceptoar.feed.errors import MalformedNotice, UnsupportedFormat

__all__ = ["CAP12", "CapDocument", "CapInfo", "cap_source", "parse_cap", "peek_cap_key"]

CAP12 = "urn:oasis:names:tc:emergency:cap:1.2"
OLDER = {
    "urn:oasis:names:tc:emergency:cap:1.1": "1.1",
    "urn:oasis:names:tc:emergency:cap:1.0": "1.0",
    "http://www.incident.com/cap/1.0": "1.0",
}
# Geocodes that name Japanese local governments or prefectures (`cap_notice`).
AREA_GEOCODES = ("LGCODE", "ISO3166-2")
_SCHEMA_FILE = Path(__file__).with_name("schemas") / "CAP-v1.2.xsd"
_NS = {"c": CAP12}
_PLAIN_SOURCE = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,63}")
_ELEMENT = re.compile(r"Element '\{[^}]*\}(\w+)'")
_NAMESPACE = re.compile(r"\{(urn|https?):[^}]*\}")

@cache
def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(_SCHEMA_FILE)))


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False
    )


@dataclass(frozen=True)
class CapInfo:
    """One `info` block."""

    language: str
    categories: list[str]
    event: str
    urgency: str
    severity: str
    certainty: str
    expires: str | None
    sender_name: str | None
    headline: str | None
    description: str | None
    instruction: str | None
    web: str | None
    parameters: dict[str, str]
    # Geocodes that name local governments: (LGCODE or ISO3166-2, value as sent, where in the document).
    geocodes: list[tuple[str, str, str]]
    # The line of each element of the block, for messages that name it.
    lines: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CapDocument:
    """A parsed, schema-valid CAP 1.2 alert."""

    identifier: str
    sender: str
    sent: str
    status: str
    msg_type: str
    scope: str
    restriction: str | None
    references: list[str]
    infos: list[CapInfo] = field(default_factory=list)
    # The line of each element of the alert, for messages that name it.
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return [i.language for i in self.infos]


def _text(el: Any, name: str) -> str | None:
    found = el.find(f"c:{name}", _NS)
    if found is None or found.text is None:
        return None
    return str(found.text).strip() or None


def _pairs(el: Any, name: str) -> list[tuple[str, str]]:
    return [((_text(p, "valueName") or ""), (_text(p, "value") or "")) for p in el.findall(f"c:{name}", _NS)]


def _info(el: Any, index: int) -> CapInfo:
    geocodes = []
    for a, area in enumerate(el.findall("c:area", _NS)):
        for g, (name, value) in enumerate(_pairs(area, "geocode")):
            if name.upper() in AREA_GEOCODES:
                geocodes.append((name.upper(), value, f"info[{index}].area[{a}].geocode[{g}]"))
    return CapInfo(
        language=_text(el, "language") or "en-US",
        categories=[str(c.text).strip() for c in el.findall("c:category", _NS) if c.text],
        event=_text(el, "event") or "",
        urgency=_text(el, "urgency") or "Unknown",
        severity=_text(el, "severity") or "Unknown",
        certainty=_text(el, "certainty") or "Unknown",
        expires=_text(el, "expires"),
        sender_name=_text(el, "senderName"),
        headline=_text(el, "headline"),
        description=_text(el, "description"),
        instruction=_text(el, "instruction"),
        web=_text(el, "web"),
        parameters={k: v for k, v in _pairs(el, "parameter")},
        geocodes=geocodes,
        lines=_lines(el),
    )


def _lines(el: Any) -> dict[str, int]:
    """Element name → line, for the children of `el` (the first of each name)."""
    lines: dict[str, int] = {}
    for child in el:
        if isinstance(child.tag, str):
            lines.setdefault(etree.QName(child).localname, child.sourceline or 0)
    return lines


def _root(data: bytes) -> Any:
    """The document's root element; a DOCTYPE anywhere, in any encoding, is refused by what the parser saw."""
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise MalformedNotice(f"not well-formed XML: {exc}") from exc
    except (etree.LxmlError, ValueError) as exc:  # an encoding lxml cannot read, say
        raise MalformedNotice(f"not readable XML: {exc}") from exc
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise InvalidNotice(
            "a DOCTYPE (and with it any entity declaration) is refused in CAP documents", field="alert"
        )
    return root


def cap_source(sender: str) -> str:
    """ceptoar's source key for a CAP sender, which is kept as sent beside it.

    A plain sender (an address or a host name, as CAP senders usually are)
    is its own key, lower-cased. Any other (a URL, say: CAP forbids only
    spaces, commas and '<' and '&' there) keeps a readable part and gains a
    hash of the whole, so two senders never share a key.
    """
    low = sender.strip().lower()
    if _PLAIN_SOURCE.fullmatch(low):
        return low
    readable = re.sub(r"[^a-z0-9._@+-]+", "-", low.split("://", 1)[-1]).strip("-._@+")[:46]
    return f"{readable or 'sender'}+{hashlib.sha256(low.encode()).hexdigest()[:12]}"


def peek_cap_key(data: bytes) -> tuple[str, str, str | None] | None:
    """(source, id, sent) of a CAP document, read without validating it; None where it is not clear."""
    try:
        root = _root(data)
    except InvalidNotice:
        return None
    sender, identifier = _text(root, "sender"), _text(root, "identifier")
    if sender is None or identifier is None:
        return None
    return cap_source(sender), identifier, _text(root, "sent")


def parse_cap(data: bytes) -> CapDocument:
    """Parse and validate a CAP 1.2 document, or raise naming the element at fault."""
    root = _root(data)
    qname = etree.QName(root)
    if qname.localname != "alert":
        raise UnsupportedFormat(f"the root element is <{qname.localname}>, not a CAP <alert>", field="alert")
    if qname.namespace != CAP12:
        version = OLDER.get(qname.namespace or "")
        found = f"CAP {version}" if version else f"namespace {qname.namespace!r}"
        raise UnsupportedFormat(f"{found} is not accepted; ceptoar accepts CAP 1.2 ({CAP12})", field="alert")
    schema = _schema()
    try:
        valid = schema.validate(root)
    except etree.LxmlError as exc:
        raise InvalidNotice(f"cannot be checked against the CAP 1.2 schema: {exc}", field="alert") from exc
    if not valid:
        entry = next(iter(schema.error_log))
        element = _ELEMENT.search(entry.message)
        message = _NAMESPACE.sub("", entry.message)
        raise InvalidNotice(f"line {entry.line}: {message}", field=element.group(1) if element else "alert")
    return CapDocument(
        identifier=_text(root, "identifier") or "",
        sender=_text(root, "sender") or "",
        sent=_text(root, "sent") or "",
        status=_text(root, "status") or "",
        msg_type=_text(root, "msgType") or "",
        scope=_text(root, "scope") or "",
        restriction=_text(root, "restriction"),
        references=(_text(root, "references") or "").split(),
        infos=[_info(el, i) for i, el in enumerate(root.findall("c:info", _NS))],
        lines=_lines(root),
    )
