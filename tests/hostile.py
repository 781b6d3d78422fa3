"""Hostile and careless documents, built here so each says plainly what it tries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"


def _notice(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": "ceptoar.notice/1",
        "source": "nisc",
        "id": "H-1",
        "sent": "2026-12-01T00:00:00+09:00",
        "title": "t",
        "summary": "s",
        "category": "other",
        "tlp": "CLEAR",
    }
    doc.update(fields)
    return doc


def deep_csaf(levels: int) -> bytes:
    """A real advisory whose product tree nests `levels` branches deep."""
    doc = json.loads((DATA / "csaf" / "bsi-2022-0001.json").read_text(encoding="utf-8"))
    top: dict[str, Any] = {"category": "vendor", "name": "v0", "branches": []}
    node = top
    for i in range(1, levels):
        child: dict[str, Any] = {"category": "vendor", "name": f"v{i}", "branches": []}
        node["branches"].append(child)
        node = child
    del node["branches"]
    node["product"] = {"name": "deep", "product_id": "CSAFPID-DEEP"}
    doc["product_tree"]["branches"].append(top)
    return json.dumps(doc).encode()


def big_csaf(products: int, vulnerabilities: int) -> bytes:
    """A valid advisory of the size a large vendor publishes: many products, many vulnerabilities."""
    doc = json.loads((DATA / "csaf" / "rhsa-2021_5217.json").read_text(encoding="utf-8"))
    branches = [
        {"category": "product_version", "name": f"pkg-{i}-1.0", "product": {"name": f"pkg {i}", "product_id": f"P{i}"}}
        for i in range(products)
    ]
    doc["product_tree"] = {"branches": [{"category": "vendor", "name": "Vendor", "branches": branches}]}
    doc["vulnerabilities"] = [
        {
            "cve": f"CVE-2021-{10000 + j}",
            "title": f"vulnerability {j} " + "x" * 40,
            "notes": [{"category": "description", "text": "y" * 400}],
            "product_status": {"known_affected": [f"P{(j * 7 + k) % products}" for k in range(10)]},
        }
        for j in range(vulnerabilities)
    ]
    return json.dumps(doc).encode()


def _cap(identifier_text: str, *, prolog: str = "", encoding: str = "UTF-8") -> str:
    return (
        f'<?xml version="1.0" encoding="{encoding}"?>{prolog}'
        f'<alert xmlns="{CAP_NS}"><identifier>{identifier_text}</identifier><sender>s@x.example</sender>'
        "<sent>2026-12-01T00:00:00+09:00</sent><status>Actual</status><msgType>Alert</msgType>"
        "<scope>Public</scope></alert>"
    )


_DTD = '<!DOCTYPE alert [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'

# (name, document, content type, the words its refusal must contain)
REFUSED: list[tuple[str, bytes, str | None, str]] = [
    ("json nested 100000 deep", b'{"schema": "ceptoar.notice/1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "application/json", "nested deeper than 64 levels"),
    ("json nested 70 deep", json.dumps(_notice(x=json.loads("[" * 70 + "]" * 70))).encode(),
     "application/json", "nested deeper than 64 levels"),
    ("a number of 5000 digits", json.dumps(_notice(cvss={"score": 0})).encode().replace(b'"score": 0', b'"score": ' + b"9" * 5000),
     "application/json", "a number of 5000 digits"),
    ("a float of 5000 digits", json.dumps(_notice()).encode().replace(b'"title"', b'"x": 1.' + b"5" * 5000 + b', "title"'),
     "application/json", "written with 5002 characters"),
    ("NaN", json.dumps(_notice()).encode().replace(b'"title"', b'"x": NaN, "title"'), "application/json",
     "NaN is not a JSON value"),
    ("1e999", json.dumps(_notice()).encode().replace(b'"title"', b'"x": 1e999, "title"'), "application/json",
     "out of range"),
    ("a lone surrogate", json.dumps(_notice(title="\ud800 x")).encode(), "application/json", "lone surrogate"),
    ("csaf product tree 300 deep", deep_csaf(300), "application/csaf+json", "nested deeper than 64 levels"),
    ("cap entity reference", _cap("&ent;").encode(), "application/cap+xml", "Entity 'ent' not defined"),
    ("cap doctype after 9 KB", _cap("&lol2;", prolog="<!--" + "x" * 9000 + "-->" + _DTD).encode(),
     "application/cap+xml", "DOCTYPE"),
    ("cap doctype in utf-16", _cap("&lol2;", prolog=_DTD, encoding="UTF-16").encode("utf-16"),
     "application/cap+xml", "DOCTYPE"),
    ("cap doctype in utf-16, no content type", _cap("&lol2;", prolog=_DTD, encoding="UTF-16").encode("utf-16"),
     None, "DOCTYPE"),
    ("cap external dtd", _cap("x", prolog='<!DOCTYPE alert SYSTEM "http://attacker.example/x.dtd">').encode(),
     "application/cap+xml", "DOCTYPE"),
    ("cap 300 elements deep", ("<alert>" + "<a>" * 300 + "</a>" * 300 + "</alert>").encode(),
     "application/cap+xml", "XML"),
]
