"""Build the registry from the national list of local governments.

    python -m ceptoar.registry.build DATA_DIR > subscribers/registry.csv

DATA_DIR holds `prefjp-utf8.csv` and `localgovjp-utf8.csv` (code4fukui/localgovjp,
CC0). The wards of designated cities (行政区, listed as "札幌市 中央区") are
part of their city and are left out; Tokyo's special wards are local
governments and stay. Each organisation gets two placeholder addresses under
the reserved `.example` domain, one primary and one security (the designated
security contact), until the real addresses are imported.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from ceptoar.model.codes import validate_lgcode
from ceptoar.registry.csvio import RegistryRow, write_registry

__all__ = ["build_registry"]


def placeholder_rows(code: str, name: str) -> list[RegistryRow]:
    """The two placeholder addresses of one organisation."""
    return [
        RegistryRow(code, name, f"primary@{code}.lg.example", "primary"),
        RegistryRow(code, name, f"security@{code}.lg.example", "security", contact=True),
    ]


def build_registry(data_dir: Path) -> list[RegistryRow]:
    """All 47 prefectures and 1,741 municipalities, two addresses each, in code order."""
    orgs: dict[str, str] = {}
    with (data_dir / "prefjp-utf8.csv").open(encoding="utf-8-sig", newline="") as f:
        for rec in csv.DictReader(f):
            orgs[validate_lgcode(rec["lgcode"].zfill(6))] = rec["pref"]
    with (data_dir / "localgovjp-utf8.csv").open(encoding="utf-8-sig", newline="") as f:
        for rec in csv.DictReader(f):
            if " " in rec["city"]:
                continue  # a ward of a designated city, served through its city
            orgs[validate_lgcode(rec["lgcode"])] = rec["pref"] + rec["city"]
    return [row for code in sorted(orgs) for row in placeholder_rows(code, orgs[code])]


def main() -> None:
    rows = build_registry(Path(sys.argv[1]))
    write_registry(rows, sys.stdout)


if __name__ == "__main__":
    main()
