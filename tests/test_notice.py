"""The JSON notice: what is accepted, and errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ceptoar.errors import InvalidNotice
from ceptoar.feed import parse_notice
from ceptoar.feed.formats import parse_any
from ceptoar.model.notice import MsgType, Severity, Tlp
from tests.harness import REPO, notice_doc


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.*")), ids=lambda p: p.name)
def test_examples_parse(path: Path) -> None:
    parsed = parse_any(path.read_bytes())
    expected = "cap" if path.suffix == ".xml" else "csaf" if path.name.startswith("advisory") else "json"
    assert parsed.format == expected
    assert parsed.notice.source in {"nisc", "cap@nisc.example", "www.bsi.bund.de"}
    assert parsed.notice.sent.tzinfo is not None


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.*")), ids=lambda p: p.name)
def test_the_samples_never_expire(path: Path) -> None:
    """A newcomer may run the README's commands any year: no sample is refused as expired."""
    from datetime import UTC, datetime, timedelta

    notice = parse_any(path.read_bytes()).notice
    assert not notice.is_expired(datetime.now(UTC) + timedelta(days=3650 * 10))


def test_sample_notice_is_for_everyone_at_clear() -> None:
    notice = parse_notice((REPO / "examples" / "notice.json").read_bytes())
    assert notice.area == []
    assert notice.tlp is Tlp.CLEAR
    assert notice.msg_type is MsgType.ALERT
    assert notice.cvss is not None and notice.cvss.base_score == 9.8


def test_score_is_computed_from_a_v4_vector() -> None:
    vector = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"
    notice = parse_notice(json.dumps(notice_doc(cvss={"vector": vector})))
    assert notice.cvss is not None and notice.cvss.base_score == 9.3


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"schema": "ceptoar.notice/2"}, "schema", "accepted: ceptoar.notice/1"),
        ({"sent": "2026-11-28T10:00:00"}, "sent", "timezone"),
        ({"tlp": "PINK"}, "tlp", "AMBER+STRICT"),
        ({"severity": "urgent"}, "severity", "critical"),
        ({"area": ["13", "131017"]}, "area[1]", "expected 6"),
        ({"cvss": {"score": 11}}, "cvss.score", "less than or equal to 10"),
        ({"cvss": {"vector": "CVSS:3.1/AV:X"}}, "cvss", "not a CVSS vector"),
        (
            {"cvss": {"vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "score": 5.0}},
            "cvss",
            "does not match",
        ),
        ({"msg_type": "update"}, "references", "must name"),
        ({"expires": "2000-01-01T00:00:00+09:00"}, "expires", "must not be before sent"),
        ({"title": ""}, "title", "at least 1"),
        ({"links": ["not a url"]}, "links[0]", "URL"),
        ({"colour": "red"}, "colour", "Extra inputs"),
        ({"source": "NISC Japan"}, "source", "pattern"),
    ],
)
def test_bad_field_is_named(change: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InvalidNotice) as info:
        parse_notice(json.dumps(notice_doc(**change)))
    assert info.value.field == field
    assert words.lower() in info.value.reason.lower()


def test_missing_field_is_named() -> None:
    doc = notice_doc()
    del doc["category"]
    with pytest.raises(InvalidNotice) as info:
        parse_notice(json.dumps(doc))
    assert info.value.field == "category"


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", "\udcff".encode("utf-8", "surrogatepass")])
def test_not_a_notice_at_all(data: bytes) -> None:
    with pytest.raises(InvalidNotice):
        parse_notice(data)


def test_severity_ranks_order_urgency() -> None:
    ranked = sorted(Severity, key=lambda s: s.rank, reverse=True)
    assert ranked == [Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("expires", "9999-12-31T23:59:59Z"),
        ("sent", "9999-01-01T00:00:00+09:00"),
        ("sent", "0001-01-01T00:00:00+14:00"),
        ("sent", "1969-12-31T23:59:59Z"),
        ("expires", "2200-01-01T09:00:00+09:00"),  # 2200-01-01T00:00:00Z
    ],
)
def test_a_time_outside_the_range_is_refused_naming_its_field(field: str, value: str) -> None:
    with pytest.raises(InvalidNotice) as info:
        parse_notice(json.dumps(notice_doc(**{field: value})))
    assert info.value.field == field
    assert "outside the accepted range, 1970 to 2200" in info.value.reason


def test_titles_and_text_lose_control_and_invisible_characters() -> None:
    notice = parse_notice(
        json.dumps(
            notice_doc(
                title="緊急\x1b[2J\x07のお知らせ\u202e\u200b\r\n続き",
                summary="一行目\r\n二行目\x00\x1b]0;title\x07\u2066",
                body="表\tの列\r三行目\x9b31m",
                translations={"en": {"title": "Urgent\x1b[1m notice", "summary": "s\u200e"}},
            )
        )
    )
    assert notice.title == "緊急[2Jのお知らせ 続き"
    assert notice.summary == "一行目\n二行目]0;title"
    assert notice.body == "表\tの列\n三行目31m"
    assert notice.translations["en"].title == "Urgent[1m notice"


@pytest.mark.parametrize("ident", ["NISC 1", "NISC\u200b1", "NISC\x1b1", "NISC\u202e1", "NISC\x851", "NISC\ufeff1"])
def test_an_id_with_a_space_control_or_invisible_character_is_refused(ident: str) -> None:
    with pytest.raises(InvalidNotice) as info:
        parse_notice(json.dumps(notice_doc(id=ident)))
    assert info.value.field == "id"
    assert "may not hold spaces, controls or invisible characters" in info.value.reason


def test_a_title_of_nothing_but_controls_is_refused_saying_so() -> None:
    with pytest.raises(InvalidNotice) as info:
        parse_notice(json.dumps(notice_doc(title="\x1b\x07\u200b")))
    assert (info.value.field, info.value.reason) == (
        "title",
        "holds nothing but control or invisible characters",
    )
