"""CSAF 2.0 security advisories, validated and turned into a Notice.

Validation: the official CSAF 2.0 JSON schema (shipped, with FIRST's CVSS
schemas resolved locally, never fetched), reporting the first error with
its JSON path; then the CSAF mandatory tests 6.1.1 (a product id is used
but never defined) and 6.1.2 (a product id is defined twice).

Mapping: the publisher's namespace host is the source, the tracking id the
id; a revised advisory (more than one revision) is an update referring to
the tracking id. Title, the summary note and the other notes become the
text; CVE ids and the highest CVSS base score (computed from its vector by
the `cvss` package) go to classification, as do the aggregate severity and
an exploit status threat. TLP 1.0 labels map to TLP 2.0 (WHITE → CLEAR);
an advisory without one is treated as TLP:AMBER.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cvss
from jsonschema import Draft201909Validator
from jsonschema.exceptions import best_match
from pydantic import ValidationError
from referencing import Registry, Resource

from ceptoar.errors import InvalidNotice
from ceptoar.feed.jsonsafe import load_json
from ceptoar.feed.notice import validation_error
from ceptoar.model.notice import Notice

__all__ = ["check_csaf", "csaf_key", "csaf_notice", "csaf_to_notice", "parse_csaf", "parse_csaf_notice"]

_SCHEMAS = Path(__file__).with_name("schemas")
STATUS_LISTS = (
    "first_affected",
    "first_fixed",
    "fixed",
    "known_affected",
    "known_not_affected",
    "last_affected",
    "recommended",
    "under_investigation",
)
SEVERITY = {
    "critical": "critical",
    "important": "high",
    "high": "high",
    "moderate": "medium",
    "medium": "medium",
    "low": "low",
}
CATEGORY = {"csaf_security_advisory": "vulnerability", "csaf_vex": "advisory"}
TLP = {"WHITE": "CLEAR", "GREEN": "GREEN", "AMBER": "AMBER", "RED": "RED"}


@cache
def _validator() -> Draft201909Validator:
    schema = json.loads((_SCHEMAS / "csaf_json_schema.json").read_text(encoding="utf-8"))
    resources = []
    for name in ("cvss-v2.0.json", "cvss-v3.0.json", "cvss-v3.1.json"):
        doc = json.loads((_SCHEMAS / name).read_text(encoding="utf-8"))
        # FIRST's schemas are draft-07 and say so; the CSAF schema names them by this URL.
        resources.append((f"https://www.first.org/cvss/{name}", Resource.from_contents(doc)))
    return Draft201909Validator(schema, registry=Registry().with_resources(resources))


def _definitions(tree: Any, path: str) -> Iterator[tuple[str, str]]:
    """(product id, where it is defined) for every definition in a product tree."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            here = f"{path}.{key}"
            if key in ("product", "full_product_name") and isinstance(value, dict) and "product_id" in value:
                yield value["product_id"], f"{here}.product_id"
            if key == "full_product_names" and isinstance(value, list):
                for i, item in enumerate(value):
                    yield item.get("product_id"), f"{here}[{i}].product_id"
            elif key in ("branches", "relationships") or isinstance(value, dict):
                yield from _definitions(value, here)
    elif isinstance(tree, list):
        for i, item in enumerate(tree):
            yield from _definitions(item, f"{path}[{i}]")


def _uses(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """(product id, where it is used) for every reference to a product outside its definition."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}"
            if key in ("product_ids", "products", *STATUS_LISTS) and isinstance(value, list):
                yield from ((v, f"{here}[{i}]") for i, v in enumerate(value) if isinstance(v, str))
            elif key in ("product_reference", "relates_to_product_reference") and isinstance(value, str):
                yield value, here
            else:
                yield from _uses(value, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _uses(item, f"{path}[{i}]")


def _mandatory_tests(doc: dict[str, Any]) -> None:
    defined: dict[str, str] = {}
    for pid, where in _definitions(doc.get("product_tree", {}), "$.product_tree"):
        if pid in defined:
            raise InvalidNotice(
                f"CSAF mandatory test 6.1.2: product id {pid!r} is defined twice (first at {defined[pid]})",
                field=where,
            )
        defined[pid] = where
    for key in ("product_tree", "vulnerabilities"):
        for pid, where in _uses(doc.get(key, {}), f"$.{key}"):
            if pid not in defined:
                raise InvalidNotice(
                    f"CSAF mandatory test 6.1.1: product id {pid!r} is used but never defined", field=where
                )


def parse_csaf(data: bytes) -> dict[str, Any]:
    """A schema-valid CSAF 2.0 document that passes mandatory tests 6.1.1 and 6.1.2."""
    return check_csaf(load_json(data))


def check_csaf(doc: Any) -> dict[str, Any]:
    """`doc`, decoded, if it is schema-valid CSAF 2.0 and passes mandatory tests 6.1.1 and 6.1.2."""
    error = best_match(_validator().iter_errors(doc))
    if error is not None:
        raise InvalidNotice(f"CSAF schema: {error.message}", field=error.json_path)
    _mandatory_tests(doc)
    assert isinstance(doc, dict)
    return doc


def _score(vector: str) -> float | None:
    try:
        if vector.startswith("CVSS:4."):
            return float(cvss.CVSS4(vector).base_score)
        if vector.startswith("CVSS:3."):
            return float(cvss.CVSS3(vector).base_score)
        return float(cvss.CVSS2(vector).base_score)
    except cvss.CVSSError:
        return None


def _highest_cvss(vulns: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The highest base score, each computed from its vector and checked against the one given."""
    best: float | None = None
    for v, vuln in enumerate(vulns):
        for s, score in enumerate(vuln.get("scores", [])):
            for key in ("cvss_v4", "cvss_v3", "cvss_v2"):
                block = score.get(key) or {}
                computed = _score(block["vectorString"]) if "vectorString" in block else None
                if computed is None:
                    continue
                given = block.get("baseScore")
                if isinstance(given, int | float) and abs(given - computed) > 0.05:
                    raise InvalidNotice(
                        f"baseScore {given} does not match the base score {computed} of its vector",
                        field=f"$.vulnerabilities[{v}].scores[{s}].{key}.baseScore",
                    )
                best = computed if best is None else max(best, computed)
    # The base score only: CSAF vectors may carry temporal metrics too.
    return None if best is None else {"score": best}


def _notes_text(notes: list[dict[str, Any]]) -> tuple[str | None, str]:
    summary = next((n["text"] for n in notes if n.get("category") == "summary"), None)
    rest = [
        f"{n.get('title') or n['category']}\n{n['text']}"
        for n in notes
        if n.get("category") not in ("summary", "legal_disclaimer")
    ]
    return summary, "\n\n".join(rest)


def _exploited(vulns: list[dict[str, Any]]) -> bool:
    return any(
        t.get("category") == "exploit_status" and "exploit" in str(t.get("details", "")).lower()
        for v in vulns
        for t in v.get("threats", [])
    )


def csaf_key(doc: Any) -> tuple[str, str]:
    """(source, id) of an advisory: its publisher's host, and its tracking id (with the version once revised).

    KeyError or TypeError when the document lacks them.
    """
    tracking = doc["document"]["tracking"]
    namespace = doc["document"]["publisher"]["namespace"]
    host = urlsplit(namespace).hostname or namespace
    revised = len(tracking.get("revision_history", [])) > 1
    return str(host).lower(), f"{tracking['id']}@{tracking['version']}" if revised else str(tracking["id"])


def csaf_to_notice(doc: dict[str, Any]) -> Notice:
    """The Notice a CSAF advisory stands for."""
    meta = doc["document"]
    tracking = meta["tracking"]
    vulns = doc.get("vulnerabilities", [])
    summary, body = _notes_text(meta.get("notes", []))
    vuln_titles = [v["title"] for v in vulns if v.get("title")]
    revised = len(tracking.get("revision_history", [])) > 1
    source, ident = csaf_key(doc)
    fields: dict[str, Any] = {
        "schema": "ceptoar.notice/1",
        "source": source,
        "id": ident,
        "sent": tracking["current_release_date"],
        "msg_type": "update" if revised else "alert",
        "references": [tracking["id"]] if revised else [],
        "status": "actual" if tracking["status"] == "final" else "draft",
        "title": meta["title"][:300],
        "summary": summary or "\n".join(vuln_titles) or meta["title"],
        "body": body,
        "category": CATEGORY.get(meta["category"], "advisory"),
        "severity": SEVERITY.get(str((meta.get("aggregate_severity") or {}).get("text", "")).lower()),
        "cvss": _highest_cvss(vulns),
        "known_exploited": _exploited(vulns),
        "tlp": TLP.get(((meta.get("distribution") or {}).get("tlp") or {}).get("label", ""), "AMBER"),
        "links": [r["url"] for r in meta.get("references", []) if r.get("url", "").startswith("http")][:50],
        "language": "ja" if str(meta.get("lang", "en")).lower().startswith("ja") else "en",
        "sender_name": meta["publisher"]["name"][:300],
        "cves": sorted({v["cve"] for v in vulns if v.get("cve")}),
    }
    try:
        return Notice.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise validation_error(
            exc, {"id": "$.document.tracking.id", "source": "$.document.publisher.namespace"}
        ) from exc


def parse_csaf_notice(data: bytes) -> tuple[Notice, list[str]]:
    """A CSAF document as a Notice, with its language."""
    return csaf_notice(load_json(data))


def csaf_notice(doc: Any) -> tuple[Notice, list[str]]:
    """A decoded CSAF document as a Notice, with its language."""
    advisory = check_csaf(doc)
    return csaf_to_notice(advisory), [str(advisory["document"].get("lang", "en"))]
