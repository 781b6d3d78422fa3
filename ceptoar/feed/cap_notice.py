"""What a CAP 1.2 alert becomes as a Notice.

Every document the CAP 1.2 schema and specification accept is accepted,
except where ceptoar's own rules say otherwise; such a refusal says it is
ceptoar's rule and names the element, the value and its line.

- key: ceptoar's source key is derived from the `sender` (`cap_source`),
  which is kept as written; the `identifier` is the id. `sent` is kept,
  and a reused identifier with another `sent` is refused at admission.
- status: Actual → actual; Test and Exercise reach only addresses that
  asked for tests; Draft and System are held, never delivered.
- msgType Alert/Update/Cancel; `references` are kept whole (sender,
  identifier and sent as written), their identifiers becoming the notice's
  references. Ack and Error are refused (ceptoar's rule), as is an Update
  or Cancel that names nothing it refers to. A Cancel may come without an
  `info` block, as CAP cancels often do: it then says what it cancels.
- scope: Public → TLP:CLEAR, Restricted → TLP:AMBER, Private → TLP:RED
  (held for an operator); a `TLP` parameter overrides it.
- info: the block in Japanese is the notice's text, else English, else
  the first; the other Japanese or English block becomes its translation.
  A headline longer than a title may be is shortened (the description
  keeps it whole). Severity, urgency and certainty go to classification; a
  `CVSS` parameter (vector or score) and `ceptoar:category` /
  `ceptoar:known_exploited` parameters are honoured.
- area: `geocode`s named `LGCODE` hold local government codes, with the
  same meaning as in every format: two digits (`13`) are the whole
  prefecture, six digits (or five without the check digit) one
  organisation, a prefecture's own code (`130001`) the prefectural
  government alone. `ISO3166-2` geocodes `JP-13` are whole prefectures too.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ceptoar.errors import InvalidNotice
from ceptoar.feed.cap import CapDocument, CapInfo, cap_source, parse_cap
from ceptoar.model.codes import check_digit, validate_area_code
from ceptoar.model.notice import LANGUAGES, Category, Notice
from ceptoar.text import printable

__all__ = ["CAP_FIELDS", "cap_to_notice", "parse_cap_notice"]

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
_TITLE_MAX = 300


def _rule(
    doc: CapDocument, element: str, value: object, why: str, *, info: CapInfo | None = None
) -> InvalidNotice:
    """A refusal of a valid CAP document by one of ceptoar's own rules, naming the element, value and line."""
    lines = info.lines if info is not None else doc.lines
    line = lines.get(element.split("[")[0].split(".")[-1])
    where = f" (line {line})" if line else ""
    shown = printable(str(value))
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return InvalidNotice(f"ceptoar's rule, not CAP's: {why}; <{element}> is {shown!r}{where}", field=element)


def _pick(infos: list[CapInfo]) -> tuple[CapInfo, dict[str, CapInfo]]:
    """The block the notice speaks in (Japanese, else English, else the first) and its translation."""
    by_lang: dict[str, CapInfo] = {}
    for info in infos:
        by_lang.setdefault(info.language[:2].lower(), info)
    primary = by_lang.get("ja") or by_lang.get("en") or infos[0]
    others = {lang: i for lang, i in by_lang.items() if lang in LANGUAGES and i is not primary}
    return primary, others


def _area_entry(name: str, value: str) -> str | None:
    """The area code a geocode names, or None for a geocode of another kind; ValueError if it is wrong."""
    code = value.strip()
    if name == "ISO3166-2":
        if not (code.upper().startswith("JP-") and len(code) == 5):
            return None
        return validate_area_code(code[3:])
    if len(code) == 5 and code.isascii() and code.isdigit():
        code += str(check_digit(code))
    return validate_area_code(code)


def _area(doc: CapDocument) -> list[str]:
    area: list[str] = []
    for info in doc.infos:
        for name, value, where in info.geocodes:
            try:
                entry = _area_entry(name, value)
            except ValueError as exc:
                raise InvalidNotice(f"{name} {exc}", field=where) from exc
            if entry is not None and entry not in area:
                area.append(entry)
    return area


def _tlp(doc: CapDocument, info: CapInfo | None) -> str:
    params = info.parameters if info is not None else {}
    given = params.get("TLP") or params.get("tlp")
    if given:
        label = given.strip().upper().removeprefix("TLP:")
        if label not in TLP_VALUES:
            raise _rule(doc, "parameter[TLP]", given, "not a TLP 2.0 label", info=info)
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


def _title(text: str) -> str:
    return text if len(text) <= _TITLE_MAX else text[: _TITLE_MAX - 1].rstrip() + "…"


def _texts(info: CapInfo) -> dict[str, str]:
    title = info.headline or info.event
    return {"title": _title(title), "summary": info.description or title, "body": info.instruction or ""}


def _references(doc: CapDocument) -> list[dict[str, str]]:
    """`references` as written: each entry sender,identifier,sent."""
    found = []
    for entry in doc.references:
        parts = entry.split(",")
        if len(parts) != 3 or not all(parts):
            raise _rule(doc, "references", entry, "each reference must be sender,identifier,sent")
        found.append({"sender": parts[0], "identifier": parts[1], "sent": parts[2]})
    if doc.msg_type in ("Update", "Cancel") and not found:
        raise _rule(doc, "references", "", f"a {doc.msg_type} must name the message it refers to")
    return found


def _cancel_texts(doc: CapDocument, references: list[dict[str, str]]) -> dict[str, Any]:
    """The words of a Cancel that came without an `info` block: what it cancels, and who says so."""
    ids = ", ".join(r["identifier"] for r in references)
    english = {"title": _title(f"Cancelled: {ids}"), "summary": f"{doc.sender} cancels its message {ids}."}
    return {
        "title": _title(f"取消: {ids}"),
        "summary": f"{doc.sender} は先に送付した通知（{ids}）を取り消しました。",
        "language": "ja",
        "translations": {"en": english},
    }


def _info_fields(doc: CapDocument) -> dict[str, Any]:
    primary, others = _pick(doc.infos)
    params = primary.parameters
    return {
        **_texts(primary),
        "category": params.get("ceptoar:category")
        or CATEGORY.get(next(iter(primary.categories), ""), Category.OTHER),
        "cap": {"severity": primary.severity, "urgency": primary.urgency, "certainty": primary.certainty},
        "cvss": _cvss(params),
        "known_exploited": params.get("ceptoar:known_exploited", "").lower() == "true",
        "tlp": _tlp(doc, primary),
        "expires": primary.expires,
        "links": [i.web for i in (primary, *others.values()) if i.web and i.web.startswith(("http://", "https://"))],
        "language": "ja" if primary.language.lower().startswith("ja") else "en",
        "translations": {lang: _texts(i) for lang, i in others.items()},
        "sender_name": primary.sender_name,
    }


def cap_to_notice(doc: CapDocument) -> Notice:
    """The Notice a CAP alert stands for; InvalidNotice names the CAP element at fault."""
    if doc.msg_type not in MSG_TYPES:
        raise _rule(doc, "msgType", doc.msg_type, "only Alert, Update and Cancel are delivered")
    references = _references(doc)
    if doc.infos:
        texts = _info_fields(doc)
    elif doc.msg_type == "Cancel":
        texts = {**_cancel_texts(doc, references), "category": Category.OTHER, "tlp": _tlp(doc, None)}
    else:
        raise _rule(doc, "info", "", f"an {doc.msg_type} without an <info> block says nothing to deliver")
    fields: dict[str, Any] = {
        "schema": "ceptoar.notice/1",
        "source": cap_source(doc.sender),
        "sender": doc.sender,
        "id": doc.identifier,
        "sent": doc.sent,
        "msg_type": MSG_TYPES[doc.msg_type],
        "status": STATUS.get(doc.status, "draft"),
        "references": list(dict.fromkeys(r["identifier"] for r in references)),
        "cap_references": references,
        "area": _area(doc),
        **texts,
    }
    if doc.restriction:
        fields["body"] = f"[{doc.restriction}]\n\n{fields.get('body', '')}".strip()
    try:
        return Notice.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise _refusal(doc, exc, fields) from exc


# Where a Notice field came from in a CAP document, for error messages.
CAP_FIELDS = {
    "source": "sender",
    "sender": "sender",
    "id": "identifier",
    "sent": "sent",
    "references": "references",
    "cap_references": "references",
    "title": "headline",
    "summary": "description",
    "body": "instruction",
    "expires": "expires",
    "category": "parameter[ceptoar:category]",
    "cvss": "parameter[CVSS]",
    "links": "web",
    "sender_name": "senderName",
    "translations": "info",
}


def _refusal(doc: CapDocument, exc: ValidationError, fields: dict[str, Any]) -> InvalidNotice:
    """The first validation error, as ceptoar's rule about the CAP element it came from."""
    first = exc.errors(include_url=False)[0]
    head = str(first["loc"][0]) if first["loc"] else ""
    element = CAP_FIELDS.get(head, head or "alert")
    value = first.get("input", fields.get(head, ""))
    info = _pick(doc.infos)[0] if doc.infos and element not in doc.lines else None
    why = first["msg"].removeprefix("Value error, ")
    return _rule(doc, element, value, why, info=info)


def parse_cap_notice(data: bytes) -> tuple[Notice, list[str]]:
    """A CAP document as a Notice, with the languages of its info blocks."""
    doc = parse_cap(data)
    notice = cap_to_notice(doc)
    return notice, doc.languages or [notice.language, *notice.translations]
