"""OASIS CAP 1.2 alerts, parsed safely and turned into a Notice.

The parser resolves no entities, loads no DTD and opens no network
connection; a document with a DOCTYPE is refused outright. Every document
is validated against the official CAP 1.2 schema shipped in
`schemas/CAP-v1.2.xsd`. Older versions are refused with a message naming
what is accepted. An enveloped XML signature (`<Signature>` in the
xmldsig namespace, allowed by the schema) does not hinder parsing.

Mapping to the Notice:

- key: the sender (lower-cased) is the source, the identifier the id;
  `sent` is kept, and the dispatcher refuses an identifier reused with
  another `sent`.
- status: Actual → actual; Test and Exercise reach only addresses that
  asked for tests; Draft and System are held, never delivered.
- msgType Alert/Update/Cancel, with `references` (sender,identifier,sent)
  turned into the identifiers referred to; Ack and Error are refused.
- scope: Public → TLP:CLEAR, Restricted → TLP:AMBER, Private → TLP:RED
  (held for an operator); a `TLP` parameter overrides it.
- info: the block in Japanese is the notice's text, else English, else
  the first; the other Japanese or English block becomes its translation.
  Its severity, urgency and certainty go to classification; a `CVSS`
  parameter (vector or score) and `ceptoar:category` /
  `ceptoar:known_exploited` parameters are honoured.
- area: `geocode` values named `LGCODE` are local government codes, six
  digits or five without the check digit; a prefecture's own code targets
  the whole prefecture.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lxml import etree
from pydantic import ValidationError

from ceptoar.errors import InvalidNotice
from ceptoar.feed.errors import MalformedNotice, UnsupportedFormat
from ceptoar.feed.notice import Category, Notice, validation_error
from ceptoar.registry.codes import check_digit, is_prefecture, validate_lgcode

__all__ = ["CAP12", "CapDocument", "cap_source", "cap_to_notice", "parse_cap", "peek_cap_key"]

CAP12 = "urn:oasis:names:tc:emergency:cap:1.2"
OLDER = {
    "urn:oasis:names:tc:emergency:cap:1.1": "1.1",
    "urn:oasis:names:tc:emergency:cap:1.0": "1.0",
    "http://www.incident.com/cap/1.0": "1.0",
}
_SCHEMA_FILE = Path(__file__).with_name("schemas") / "CAP-v1.2.xsd"
_NS = {"c": CAP12}
_PLAIN_SOURCE = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,63}")
_ELEMENT = re.compile(r"Element '\{[^}]*\}(\w+)'")
_NAMESPACE = re.compile(r"\{(urn|https?):[^}]*\}")

STATUS = {"Actual": "actual", "Test": "test", "Exercise": "exercise", "Draft": "draft", "System": "system"}
MSG_TYPES = {"Alert": "alert", "Update": "update", "Cancel": "cancel"}
SCOPE_TLP = {"Public": "CLEAR", "Restricted": "AMBER", "Private": "RED"}
CATEGORY = {"Security": Category.ATTACK, "Infra": Category.OUTAGE}
TLP_VALUES = {
    "CLEAR": "CLEAR",
    "WHITE": "CLEAR",
    "GREEN": "GREEN",
    "AMBER": "AMBER",
    "AMBER+STRICT": "AMBER+STRICT",
    "RED": "RED",
}


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
    lgcodes: list[tuple[str, str]]  # (value as sent, where in the document)


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
    lgcodes = []
    for a, area in enumerate(el.findall("c:area", _NS)):
        for g, (name, value) in enumerate(_pairs(area, "geocode")):
            if name.upper() == "LGCODE":
                lgcodes.append((value, f"info[{index}].area[{a}].geocode[{g}]"))
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
        lgcodes=lgcodes,
    )


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
    )


def _pick(infos: list[CapInfo]) -> tuple[CapInfo, dict[str, CapInfo]]:
    """The block the notice speaks in (Japanese, else English, else the first) and its translation."""
    by_lang: dict[str, CapInfo] = {}
    for info in infos:
        by_lang.setdefault(info.language[:2].lower(), info)
    primary = by_lang.get("ja") or by_lang.get("en") or infos[0]
    others = {lang: i for lang, i in by_lang.items() if lang in ("ja", "en") and i is not primary}
    return primary, others


def _area(infos: list[CapInfo]) -> list[str]:
    area: list[str] = []
    for info in infos:
        for value, where in info.lgcodes:
            code = value.strip()
            try:
                if len(code) == 5 and code.isdigit():
                    code += str(check_digit(code))
                validate_lgcode(code)
            except ValueError as exc:
                raise InvalidNotice(f"LGCODE {exc}", field=where) from exc
            entry = code[:2] if is_prefecture(code) else code
            if entry not in area:
                area.append(entry)
    return area


def _tlp(doc: CapDocument, params: dict[str, str]) -> str:
    given = params.get("TLP") or params.get("tlp")
    if given:
        label = given.strip().upper().removeprefix("TLP:")
        if label not in TLP_VALUES:
            raise InvalidNotice(f"TLP parameter {given!r} is not a TLP 2.0 label", field="parameter[TLP]")
        return TLP_VALUES[label]
    return SCOPE_TLP.get(doc.scope, "AMBER")


def _cvss(params: dict[str, str]) -> dict[str, Any] | None:
    value = (params.get("CVSS") or "").strip()
    if not value:
        return None
    try:
        return {"score": float(value)}
    except ValueError:
        return {"vector": value}


def _texts(info: CapInfo) -> dict[str, str]:
    title = info.headline or info.event
    return {"title": title, "summary": info.description or title, "body": info.instruction or ""}


def cap_to_notice(doc: CapDocument) -> Notice:
    """The Notice a CAP alert stands for; InvalidNotice names the CAP element at fault."""
    if doc.msg_type not in MSG_TYPES:
        raise InvalidNotice(f"msgType {doc.msg_type} is not an alert, update or cancel", field="msgType")
    if not doc.infos:
        raise InvalidNotice("an alert without an info block says nothing to deliver", field="info")
    primary, others = _pick(doc.infos)
    params = primary.parameters
    category = params.get("ceptoar:category") or CATEGORY.get(
        next(iter(primary.categories), ""), Category.OTHER
    )
    fields: dict[str, Any] = {
        "schema": "ceptoar.notice/1",
        "source": cap_source(doc.sender),
        "id": doc.identifier,
        "sent": doc.sent,
        "msg_type": MSG_TYPES[doc.msg_type],
        "status": STATUS.get(doc.status, "draft"),
        "references": [r.split(",")[1] for r in doc.references if r.count(",") >= 2],
        **_texts(primary),
        "category": category,
        "cap": {"severity": primary.severity, "urgency": primary.urgency, "certainty": primary.certainty},
        "cvss": _cvss(params),
        "known_exploited": params.get("ceptoar:known_exploited", "").lower() == "true",
        "tlp": _tlp(doc, params),
        "expires": primary.expires,
        "links": [
            i.web for i in (primary, *others.values()) if i.web and i.web.startswith(("http://", "https://"))
        ],
        "area": _area(doc.infos),
        "language": "ja" if primary.language.lower().startswith("ja") else "en",
        "translations": {lang: _texts(i) for lang, i in others.items()},
        "sender_name": primary.sender_name,
    }
    if doc.restriction:
        fields["body"] = f"[{doc.restriction}]\n\n{fields['body']}".strip()
    try:
        return Notice.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise validation_error(exc, CAP_FIELDS) from exc


# Where a Notice field came from in a CAP document, for error messages.
CAP_FIELDS = {
    "source": "sender",
    "id": "identifier",
    "sent": "sent",
    "references": "references",
    "title": "info.headline",
    "summary": "info.description",
    "expires": "info.expires",
    "category": "parameter[ceptoar:category]",
    "cvss": "parameter[CVSS]",
    "links": "info.web",
}


def parse_cap_notice(data: bytes) -> tuple[Notice, list[str]]:
    """A CAP document as a Notice, with the languages of its info blocks."""
    doc = parse_cap(data)
    return cap_to_notice(doc), doc.languages
