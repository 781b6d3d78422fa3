"""The registry CSV: one row per address, validated as a whole.

Columns: code, name, email, role, language. An organisation appears once per
address; its name must be the same on every row. A file with any bad row is
refused entirely, with every problem listed by line number, so an import is
never half-done.
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
from ceptoar.registry.codes import validate_lgcode

__all__ = ["COLUMNS", "LANGUAGES", "ROLES", "RegistryRow", "read_registry", "write_registry"]

COLUMNS = ("code", "name", "email", "role", "language")
ROLES = ("primary", "security", "backup")
LANGUAGES = ("ja", "en")
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


def _check_row(line: int, raw: dict[str, str]) -> tuple[RegistryRow | None, list[RegistryProblem]]:
    problems: list[RegistryProblem] = []
    values = {k: (raw.get(k) or "").strip() for k in COLUMNS}
    try:
        validate_lgcode(values["code"])
    except ValueError as exc:
        problems.append(RegistryProblem(line, "code", str(exc)))
    if not values["name"]:
        problems.append(RegistryProblem(line, "name", "is empty"))
    if not _EMAIL.match(values["email"]) or len(values["email"]) > 254:
        problems.append(RegistryProblem(line, "email", f"{values['email']!r} is not an address"))
    if values["role"] not in ROLES:
        problems.append(RegistryProblem(line, "role", f"{values['role']!r} is not one of {', '.join(ROLES)}"))
    language = values["language"] or "ja"
    if language not in LANGUAGES:
        problems.append(
            RegistryProblem(line, "language", f"{language!r} is not one of {', '.join(LANGUAGES)}")
        )
    if problems:
        return None, problems
    email = values["email"].lower()
    return RegistryRow(values["code"], values["name"], email, values["role"], language), []


def parse_registry(stream: TextIO) -> list[RegistryRow]:
    """Parse and validate a registry; raise RegistryError listing every bad row."""
    reader = csv.DictReader(stream)
    header = tuple(reader.fieldnames or ())
    missing = [c for c in COLUMNS if c not in header and c != "language"]
    if missing:
        raise RegistryError([RegistryProblem(1, ",".join(missing), "column missing from header")])
    rows: list[RegistryRow] = []
    problems: list[RegistryProblem] = []
    seen_email: dict[str, int] = {}
    names: dict[str, tuple[str, int]] = {}
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
        writer.writerow((row.code, row.name, row.email, row.role, row.language))
    return out.getvalue() if isinstance(out, io.StringIO) else ""
