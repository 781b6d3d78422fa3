"""Strategies that turn real documents into hostile and careless ones, for the fuzz tests.

Each starts from a document that is accepted (a JSON notice, the CAP 1.2
specification's examples and NISC's own, a CSAF advisory) and changes it
as a careless sender or an attacker would: a field replaced by any JSON
value, an element's text replaced by any text, a fragment spliced in, a
few bytes flipped, another encoding.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

DATA = Path(__file__).parent / "data"

NOTICE: dict[str, Any] = {
    "schema": "ceptoar.notice/1",
    "source": "nisc",
    "id": "F-1",
    "sent": "2026-12-01T09:00:00+09:00",
    "msg_type": "alert",
    "title": "脆弱性の悪用について",
    "summary": "至急確認してください。",
    "body": "本文",
    "category": "vulnerability",
    "severity": "high",
    "cvss": {"vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"},
    "tlp": "GREEN",
    "expires": "2027-01-01T00:00:00+09:00",
    "links": ["https://www.nisc.go.jp/"],
    "area": ["13", "141003"],
}
CAP_SEEDS = [p.read_text(encoding="utf-8") for p in sorted((DATA / "cap").glob("*.xml")) if "cap11" not in p.name]
CSAF_SEED = json.loads((DATA / "csaf" / "bsi-2022-0001.json").read_text(encoding="utf-8"))

# Text as senders get it wrong: any character, and the ones that have broken parsers before.
TEXT = st.lists(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
    | st.sampled_from(
        ["\x00", "\x1b[2J", "\x1b]0;x\x07", "\u202e", "\u200b", "\ufeff", "&", "<", "]]>", "\r\n", "-00:00", "9999", "..", "/"]
    ),
    max_size=4,
).map("".join)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT | st.sampled_from(
    ["", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00", "2026-12-01", "RED", "operator", "1" * 70]
)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += _paths(value, (*prefix, i))
    return found


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy: Any = dict(doc) if isinstance(doc, dict) else list(doc)
    copy[path[0]] = _replace(copy[path[0]], path[1:], value)
    return copy


@st.composite
def json_changed(draw: st.DrawFn, seed: Any) -> bytes:
    """`seed` with up to three of its values (at any depth) replaced by any JSON value."""
    doc = seed
    paths = _paths(seed)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        doc = _replace(doc, path, draw(JSON_VALUES))
        paths = _paths(doc)
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()), allow_nan=True)
    return text.encode(draw(st.sampled_from(["utf-8", "utf-8", "utf-16"])), "surrogatepass")


@st.composite
def bytes_changed(draw: st.DrawFn, seed: bytes) -> bytes:
    """`seed` with a few bytes flipped, cut or spliced in."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["flip", "cut", "splice"]))
        if action == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(max_size=32))
    return bytes(data)


_ELEMENT_TEXT = re.compile(r">([^<>]*)<")


@st.composite
def cap_changed(draw: st.DrawFn) -> bytes:
    """A CAP document with elements' text replaced, fragments spliced in, or another encoding."""
    text = draw(st.sampled_from(CAP_SEEDS))
    spans = [m.span(1) for m in _ELEMENT_TEXT.finditer(text)]
    for _ in range(draw(st.integers(1, 4))):
        start, end = draw(st.sampled_from(spans))
        choice = draw(st.sampled_from(["escaped", "raw", "empty", "fragment"]))
        if choice == "escaped":
            new = draw(TEXT).replace("&", "&amp;").replace("<", "&lt;")
        elif choice == "raw":
            new = draw(TEXT)
        elif choice == "empty":
            new = ""
        else:
            new = draw(
                st.sampled_from(
                    [
                        "<!DOCTYPE x>",
                        "&lt;&#0;",
                        "&#x1F600;",
                        "<info/>",
                        "</alert><alert>",
                        '<?xml version="1.0"?>',
                        "<![CDATA[x]]>",
                        "&unknown;",
                        "<parameter><valueName>TLP</valueName><value>RED</value></parameter>",
                    ]
                )
            )
        text = text[:start] + new + text[end:]
        spans = [m.span(1) for m in _ELEMENT_TEXT.finditer(text)]
        if not spans:
            break
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "iso-8859-1"]))
    return text.encode(encoding, "xmlcharrefreplace")


_TYPES = [None, "application/json", "application/csaf+json", "application/cap+xml", "application/xml", "text/xml"]


@st.composite
def _typed(draw: st.DrawFn, documents: st.SearchStrategy[bytes], natural: str) -> tuple[bytes, str | None]:
    """A document with the content type its sender would give it, often; else none, or another."""
    kind = draw(st.sampled_from(["natural", "natural", "natural", "none", "any"]))
    content_type = natural if kind == "natural" else None if kind == "none" else draw(st.sampled_from(_TYPES))
    return draw(documents), content_type


def documents() -> st.SearchStrategy[tuple[bytes, str | None]]:
    """Any document a careless or hostile sender might post, with the content type it might say."""
    return st.one_of(
        _typed(json_changed(NOTICE), "application/json"),
        _typed(json_changed(CSAF_SEED), "application/csaf+json"),
        _typed(cap_changed(), "application/cap+xml"),
        _typed(bytes_changed(json.dumps(NOTICE, ensure_ascii=False).encode()), "application/json"),
        _typed(bytes_changed(CAP_SEEDS[0].encode()), "application/cap+xml"),
    )
