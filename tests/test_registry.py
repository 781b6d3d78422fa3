"""Local government codes and the registry CSV."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest

from ceptoar.errors import RegistryError
from ceptoar.model.codes import check_digit, validate_area_code, validate_lgcode
from ceptoar.registry import RegistryRow
from ceptoar.registry.build import build_registry
from ceptoar.registry.csvio import parse_registry, write_registry
from tests.harness import REPO

SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.mark.parametrize(
    ("code", "name"),
    [("011002", "札幌市"), ("130001", "東京都"), ("131016", "千代田区"), ("472018", "那覇市")],
)
def test_check_digit_of_real_codes(code: str, name: str) -> None:
    assert check_digit(code[:5]) == int(code[5]), name
    assert validate_lgcode(code) == code


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("131017", "expected 6 (131016)"),
        ("13101", "not a six-digit"),
        ("481009", "prefecture 48"),
        ("１３１０１６", "not a six-digit"),
    ],
)
def test_bad_codes_are_refused_with_the_reason(code: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_lgcode(code)


def test_area_code_accepts_prefecture_numbers_and_codes() -> None:
    assert validate_area_code("13") == "13"
    assert validate_area_code("131016") == "131016"
    with pytest.raises(ValueError, match="01-47"):
        validate_area_code("48")


def test_shipped_registry_holds_every_local_government_twice(registry_rows: list[RegistryRow]) -> None:
    codes = {r.code for r in registry_rows}
    prefectures = {c for c in codes if c[2:5] == "000"}
    assert len(registry_rows) == 3576
    assert len(codes) == 1788
    assert len(prefectures) == 47
    assert len(codes - prefectures) == 1741
    roles = Counter((r.code, r.role) for r in registry_rows)
    assert set(roles.values()) == {1}
    assert Counter(r.role for r in registry_rows) == {"primary": 1788, "security": 1788}
    assert all(r.email.endswith(".lg.example") for r in registry_rows)
    assert "131016" in codes  # 千代田区: Tokyo's special wards are local governments
    assert "011011" not in codes  # 札幌市中央区: a designated city's ward is not


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared data not beside the checkout")
def test_shipped_registry_is_built_from_the_national_list() -> None:
    built = write_registry(build_registry(SHARED_DATA))
    assert built == (REPO / "subscribers" / "registry.csv").read_text(encoding="utf-8")


def test_every_bad_row_is_reported_with_its_line() -> None:
    text = (
        "code,name,email,role,language\n"
        "131016,東京都千代田区,primary@131016.lg.example,primary,ja\n"
        "131017,東京都千代田区,x@131016.lg.example,primary,ja\n"
        "131024,東京都中央区,not-an-address,primary,ja\n"
        "131024,東京都中央区,security@131024.lg.example,boss,fr\n"
        "131032,東京都港区,PRIMARY@131016.lg.example,primary,ja\n"
    )
    with pytest.raises(RegistryError) as info:
        parse_registry(io.StringIO(text))
    found = [(p.line, p.column) for p in info.value.problems]
    assert found == [
        (3, "code"),
        (4, "email"),
        (5, "role"),
        (5, "language"),
        (6, "email"),
    ]
    assert "expected 6" in str(info.value)
    assert "already on line 2" in str(info.value)


def test_registry_round_trips(tmp_path: Path, registry_rows: list[RegistryRow]) -> None:
    path = tmp_path / "r.csv"
    path.write_text(write_registry(registry_rows[:10]), encoding="utf-8")
    assert parse_registry(io.StringIO(path.read_text(encoding="utf-8"))) == registry_rows[:10]


def test_missing_column_is_named() -> None:
    with pytest.raises(RegistryError, match="email"):
        parse_registry(io.StringIO("code,name,role\n131016,x,primary\n"))
