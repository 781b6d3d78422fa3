"""The registry CSV: one row per address, validated as a whole.

Columns: code, name, email, role, language, then the address's
subscription: min_severity (critical/high/medium/low, default low),
categories and prefectures (space-separated; empty means all and none
extra), tests (yes/no: wants test and exercise alerts), contact (yes/no:
the organisation's designated security contact, at most one),
charset (utf-8, the default, or iso-2022-jp for mail systems that need
it), digest (none, weekly or monthly: the security mail magazine) and low
(auto, single, digest or both: how low-severity notices come; auto means
only in the digest for an address that takes one). Only the
first four are required. An organisation appears once per address; its
name must be the same on every row. A file with any bad row is refused
entirely, with every problem listed by line number, so an import is never
half-done.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ceptoar.errors import RegistryError, RegistryProblem
from ceptoar.model.codes import validate_lgcode
from ceptoar.model.digest import DigestKind, LowNotices
from ceptoar.model.notice import LANGUAGES, Category, Severity
from ceptoar.model.subscriber import Role

__all__ = [
    "COLUMNS",
    "RegistryRow",
    "read_registry",
    "write_registry",
]

COLUMNS = (
    "code",
    "name",
    "email",
    "role",
    "language",
    "min_severity",
    "categories",
    "prefectures",
    "tests",
    "contact",
    "charset",
    "digest",
    "low",
)
REQUIRED = ("code", "name", "email", "role")
ROLES = tuple(r.value for r in Role)
SEVERITIES = tuple(s.value for s in Severity)
# How an address's mail is encoded (`ceptoar.render`): UTF-8, or ISO-2022-JP where every character fits.
CHARSETS = ("utf-8", "iso-2022-jp")
DIGESTS = tuple(k.value for k in DigestKind)
LOWS = tuple(v.value for v in LowNotices)
CATEGORIES = tuple(c.value for c in Category)
_YES = {
    "yes": True,
    "y": True,
    "true": True,
    "1": True,
    "no": False,
    "n": False,
    "false": False,
    "0": False,
    "": False,
}
# Deliberately plain: an ASCII local part and a dotted domain. Registry
# addresses are typed by people; anything stranger is a typo until shown otherwise.
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


@dataclass(frozen=True)
class RegistryRow:
    """One address of one organisation."""

    code: str
    name: str
    email: str
    role: str
    language: str = "ja"
    min_severity: str = "low"
    categories: tuple[str, ...] = ()
    prefectures: tuple[str, ...] = ()
    tests: bool = False
    contact: bool = False
    charset: str = "utf-8"
    digest: str = "none"
    low: str = "auto"


def _check_identity(line: int, values: dict[str, str]) -> list[RegistryProblem]:
    problems: list[RegistryProblem] = []
    try:
        validate_lgcode(values["code"])
    except ValueError as exc:
        problems.append(RegistryProblem(line, "code", str(exc)))
    if not values["name"]:
        problems.append(RegistryProblem(line, "name", "is empty"))
    if not _EMAIL.match(values["email"]) or len(values["email"]) > 254:
        problems.append(RegistryProblem(line, "email", f"{values['email']!r} is not an address"))
    for column, allowed, default in (
        ("role", ROLES, None),
        ("language", LANGUAGES, "ja"),
        ("min_severity", SEVERITIES, "low"),
    ):
        value = values[column] or (default or "")
        if value not in allowed:
            problems.append(RegistryProblem(line, column, f"{value!r} is not one of {', '.join(allowed)}"))
    return problems


def _check_subscription(line: int, values: dict[str, str]) -> list[RegistryProblem]:
    problems: list[RegistryProblem] = []
    for category in values["categories"].split():
        if category not in CATEGORIES:
            problems.append(
                RegistryProblem(line, "categories", f"{category!r} is not one of {', '.join(CATEGORIES)}")
            )
    for pref in values["prefectures"].split():
        if not (len(pref) == 2 and pref.isdigit() and 1 <= int(pref) <= 47):
            problems.append(
                RegistryProblem(line, "prefectures", f"{pref!r} is not a prefecture number 01-47")
            )
    for column in ("tests", "contact"):
        if values[column].lower() not in _YES:
            problems.append(RegistryProblem(line, column, f"{values[column]!r} is not yes or no"))
    for column, allowed in (("charset", CHARSETS), ("digest", DIGESTS), ("low", LOWS)):
        if values[column] and values[column].lower() not in allowed:
            problems.append(
                RegistryProblem(line, column, f"{values[column]!r} is not one of {', '.join(allowed)}")
            )
    return problems


def _check_row(line: int, raw: dict[str, str]) -> tuple[RegistryRow | None, list[RegistryProblem]]:
    values = {k: (raw.get(k) or "").strip() for k in COLUMNS}
    problems = _check_identity(line, values) + _check_subscription(line, values)
    if problems:
        return None, problems
    return RegistryRow(
        code=values["code"],
        name=values["name"],
        email=values["email"].lower(),
        role=values["role"],
        language=values["language"] or "ja",
        min_severity=values["min_severity"] or "low",
        categories=tuple(values["categories"].split()),
        prefectures=tuple(values["prefectures"].split()),
        tests=_YES[values["tests"].lower()],
        contact=_YES[values["contact"].lower()],
        charset=values["charset"].lower() or "utf-8",
        digest=values["digest"].lower() or "none",
        low=values["low"].lower() or "auto",
    ), []


def parse_registry(stream: TextIO) -> list[RegistryRow]:
    """Parse and validate a registry; raise RegistryError listing every bad row."""
    reader = csv.DictReader(stream)
    header = tuple(reader.fieldnames or ())
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise RegistryError([RegistryProblem(1, ",".join(missing), "column missing from header")])
    rows: list[RegistryRow] = []
    problems: list[RegistryProblem] = []
    seen_email: dict[str, int] = {}
    names: dict[str, tuple[str, int]] = {}
    contacts: dict[str, int] = {}
    for raw in reader:
        line = reader.line_num
        row, row_problems = _check_row(line, raw)
        problems.extend(row_problems)
        if row is None:
            continue
        if row.email in seen_email:
            problems.append(
                RegistryProblem(line, "email", f"{row.email} already on line {seen_email[row.email]}")
            )
            continue
        seen_email[row.email] = line
        first = names.setdefault(row.code, (row.name, line))
        if first[0] != row.name:
            problems.append(
                RegistryProblem(line, "name", f"{row.name!r} differs from {first[0]!r} on line {first[1]}")
            )
            continue
        if row.contact:
            if row.code in contacts:
                problems.append(
                    RegistryProblem(
                        line, "contact", f"{row.code} already has its contact on line {contacts[row.code]}"
                    )
                )
                continue
            contacts[row.code] = line
        rows.append(row)
    if problems:
        raise RegistryError(problems)
    return rows


def read_registry(path: Path) -> list[RegistryRow]:
    """Read a registry file (UTF-8, with or without a byte-order mark)."""
    with path.open(encoding="utf-8-sig", newline="") as stream:
        return parse_registry(stream)


def write_registry(rows: Iterable[RegistryRow], stream: TextIO | None = None) -> str:
    """Write rows as registry CSV to `stream`; return the text when no stream is given."""
    out = stream or io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(
            (
                row.code,
                row.name,
                row.email,
                row.role,
                row.language,
                row.min_severity,
                " ".join(row.categories),
                " ".join(row.prefectures),
                "yes" if row.tests else "no",
                "yes" if row.contact else "no",
                row.charset,
                row.digest,
                row.low,
            )
        )
    return out.getvalue() if isinstance(out, io.StringIO) else ""
