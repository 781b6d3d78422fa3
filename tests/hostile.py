"""Hostile and careless documents, built here so each says plainly what it tries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"


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


FUZZ = DATA / "fuzz"

# (what it tries, the file under tests/data/fuzz, the content type it comes with, words its refusal must hold)
_REFUSED = [
    ("json nested 100000 deep", "json-nested-100000-deep.json", "application/json", "nested deeper than 64 levels"),
    ("json nested 70 deep", "json-nested-70-deep.json", "application/json", "nested deeper than 64 levels"),
    ("a number of 5000 digits", "a-number-of-5000-digits.json", "application/json", "a number of 5000 digits"),
    ("a float of 5000 digits", "a-float-of-5000-digits.json", "application/json", "written with 5002 characters"),
    ("NaN", "nan.json", "application/json", "NaN is not a JSON value"),
    ("1e999", "1e999.json", "application/json", "out of range"),
    ("a lone surrogate", "a-lone-surrogate.json", "application/json", "lone surrogate"),
    ("csaf product tree 300 deep", "csaf-product-tree-300-deep.json", "application/csaf+json", "nested deeper than 64"),
    ("cap entity reference", "cap-entity-reference.xml", "application/cap+xml", "Entity 'ent' not defined"),
    ("cap doctype after 9 KB", "cap-doctype-after-9-kb.xml", "application/cap+xml", "DOCTYPE"),
    ("cap doctype in utf-16", "cap-doctype-in-utf-16.xml", "application/cap+xml", "DOCTYPE"),
    ("cap doctype in utf-16, no content type", "cap-doctype-in-utf-16.xml", None, "DOCTYPE"),
    ("cap external dtd", "cap-external-dtd.xml", "application/cap+xml", "DOCTYPE"),
    ("cap 300 elements deep", "cap-300-elements-deep.xml", "application/cap+xml", "XML"),
]
# (name, document, content type, the words its refusal must contain)
REFUSED: list[tuple[str, bytes, str | None, str]] = [
    (name, (FUZZ / file).read_bytes(), content_type, reason) for name, file, content_type, reason in _REFUSED
]
