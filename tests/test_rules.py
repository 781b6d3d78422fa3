"""The default severity rules, table-driven, and the rules file's own checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ceptoar.dispatch.rules import RulesError, RuleSet, classify, load_rules
from ceptoar.feed import parse_notice
from ceptoar.feed.formats import parse_any
from ceptoar.model.notice import Notice
from tests.harness import REPO, notice_doc

V31_CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8
V31_HIGH = "CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:N"  # 8.1
V31_MEDIUM = "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"  # 5.4
V40_CRITICAL = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"  # 9.3


@pytest.fixture(scope="module")
def default_rules() -> RuleSet:
    return load_rules()


def _json(**fields: Any) -> Notice:
    """A plain advisory with no rating of its own, then `fields`."""
    doc = notice_doc(category="advisory", title="お知らせ", summary="定例の情報提供です。")
    del doc["severity"]
    doc.update(fields)
    return parse_notice(json.dumps(doc))


def _cap(severity: str, urgency: str, certainty: str) -> dict[str, Any]:
    return {"cap": {"severity": severity, "urgency": urgency, "certainty": certainty}}


CASES = [
    pytest.param({}, "low", ("default",), id="nothing to go on"),
    pytest.param({"severity": "low"}, "low", ("sender-low",), id="sender low"),
    pytest.param({"severity": "medium"}, "medium", ("sender-medium",), id="sender medium"),
    pytest.param({"severity": "high"}, "high", ("sender-high",), id="sender high"),
    pytest.param({"severity": "critical"}, "critical", ("sender-critical",), id="sender critical"),
    pytest.param({"cvss": {"vector": V31_CRITICAL}}, "critical", ("cvss-critical",), id="cvss 9.8 vector"),
    pytest.param({"cvss": {"vector": V40_CRITICAL}}, "critical", ("cvss-critical",), id="cvss v4 9.3"),
    pytest.param({"cvss": {"vector": V31_HIGH}}, "high", ("cvss-high",), id="cvss 8.1"),
    pytest.param({"cvss": {"vector": V31_MEDIUM}}, "medium", ("cvss-medium",), id="cvss 5.4"),
    pytest.param({"cvss": {"score": 2.0}}, "low", ("cvss-low",), id="cvss 2.0"),
    pytest.param({"cvss": {"score": 8.9}}, "high", ("cvss-high",), id="cvss 8.9 top of high"),
    pytest.param(
        {"severity": "low", "cvss": {"score": 9.1}},
        "critical",
        ("cvss-critical",),
        id="low hint, critical cvss",
    ),
    pytest.param(
        {"severity": "high", "cvss": {"score": 7.5}},
        "high",
        ("cvss-high", "sender-high"),
        id="agreeing rules",
    ),
    pytest.param(
        {"known_exploited": True, "cvss": {"vector": V31_HIGH}},
        "critical",
        ("exploited-high-cvss",),
        id="exploited, high cvss",
    ),
    pytest.param({"known_exploited": True}, "high", ("known-exploited",), id="exploited, no score"),
    pytest.param(
        {"known_exploited": True, "cvss": {"score": 5.0}},
        "high",
        ("known-exploited",),
        id="exploited, medium",
    ),
    pytest.param({"title": "ランサムウェア被害の発生について"}, "high", ("ransomware",), id="ransomware ja"),
    pytest.param(
        {"title": "RansomWare activity", "language": "en"},
        "high",
        ("ransomware",),
        id="ransomware en any case",
    ),
    pytest.param({"summary": "ＺＥＲＯ-ＤＡＹ の脆弱性"}, "high", ("zero-day",), id="full-width keyword"),
    pytest.param(
        {"summary": "既に悪用が確認されています。"},
        "high",
        ("exploitation-reported",),
        id="exploitation in text",
    ),
    pytest.param({"category": "attack"}, "high", ("nisc-attack",), id="NISC reports an attack"),
    pytest.param(
        {"category": "attack", "source": "jpcert"}, "medium", ("attack",), id="other source, attack"
    ),
    pytest.param({"category": "outage"}, "medium", ("outage",), id="outage"),
    pytest.param({"category": "phishing"}, "medium", ("phishing",), id="phishing"),
    pytest.param(
        _cap("Extreme", "Immediate", "Observed"), "critical", ("cap-extreme-now",), id="CAP extreme now"
    ),
    pytest.param(_cap("Extreme", "Future", "Possible"), "high", ("cap-extreme",), id="CAP extreme uncertain"),
    pytest.param(_cap("Severe", "Expected", "Likely"), "high", ("cap-severe-now",), id="CAP severe expected"),
    pytest.param(_cap("Severe", "Future", "Likely"), "medium", ("cap-severe",), id="CAP severe future"),
    pytest.param(_cap("Minor", "Past", "Observed"), "low", ("default",), id="CAP minor"),
]


@pytest.mark.parametrize(("fields", "severity", "rules"), CASES)
def test_default_rules(
    default_rules: RuleSet, fields: dict[str, Any], severity: str, rules: tuple[str, ...]
) -> None:
    result = classify(_json(**fields), default_rules)
    assert (result.severity.value, result.rules) == (severity, rules)


def test_operator_override_wins_and_says_so(default_rules: RuleSet) -> None:
    notice = _json(source="operator", severity_override="critical", cvss={"score": 3.0})
    result = classify(notice, default_rules)
    assert (result.severity.value, result.rules) == ("critical", ("operator-override",))
    assert result.computed is not None
    assert (result.computed.severity.value, result.computed.rules) == ("low", ("cvss-low",))


def test_every_shipped_rule_has_a_description(default_rules: RuleSet) -> None:
    assert len(default_rules.rule) >= 20
    assert all(r.description.strip() for r in default_rules.rule)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[[rule]]\nname='a'\ndescription='x'\nwhen={cvss_min=11}\nseverity='high'\n",
            "rule #1 (a): when.cvss_min: Input should be less than or equal to 10",
        ),
        (
            "[[rule]]\nname='a'\ndescription='x'\nwhen={colour=['red']}\nseverity='high'\n",
            "rule #1 (a): when.colour: Extra inputs are not permitted",
        ),
        (
            "[[rule]]\nname='a'\ndescription='x'\nwhen={}\nseverity='high'\n",
            "rule #1 (a): when: a rule needs at least one condition",
        ),
        (
            "[[rule]]\nname='a'\ndescription='x'\nwhen={source=['nisc']}\nseverity='urgent'\n",
            "rule #1 (a): severity: Input should be 'critical', 'high', 'medium' or 'low'",
        ),
        (
            "[[rule]]\nname='a'\ndescription='x'\nwhen={source=['x']}\nseverity='low'\n"
            "[[rule]]\nname='a'\ndescription='y'\nwhen={source=['y']}\nseverity='low'\n",
            "rule name 'a' is used twice",
        ),
        (
            "[[rule]]\nname='default'\ndescription='x'\nwhen={source=['x']}\nseverity='low'\n",
            "rule #1 (default): name: 'default' is reserved",
        ),
        ("[[rule]\n", "not valid TOML"),
    ],
)
def test_a_bad_rules_file_names_the_rule_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert message in str(info.value)


def test_an_operators_own_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        "[[rule]]\nname='vpn'\ndescription='VPN products'\nwhen={keywords=['VPN']}\nseverity='critical'\n",
        encoding="utf-8",
    )
    notice = parse_notice((REPO / "examples" / "notice.json").read_bytes())
    result = classify(notice, load_rules(path))
    assert (result.severity.value, result.rules) == ("critical", ("vpn",))


DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    ("path", "severity", "rules"),
    [
        pytest.param("cap/hsas-alert.xml", "high", ("cap-severe-now",), id="CAP spec A.1 severe, immediate"),
        pytest.param(
            "cap/thunderstorm-warning.xml", "high", ("cap-severe-now",), id="CAP spec A.2 severe, observed"
        ),
        pytest.param("cap/earthquake-update.xml", "low", ("default",), id="CAP spec A.3 minor, past"),
        pytest.param(
            "cap/nisc-lgcode-ja-en.xml", "critical", ("cvss-critical",), id="CAP with a CVSS parameter"
        ),
        pytest.param(
            "csaf/bsi-2022-0001.json", "medium", ("cvss-medium", "sender-medium"), id="CSAF BSI 6.1 Moderate"
        ),
        pytest.param("csaf/rhsa-2021_5217.json", "high", ("sender-high",), id="CSAF Red Hat Important"),
    ],
)
def test_default_rules_on_cap_and_csaf(
    default_rules: RuleSet, path: str, severity: str, rules: tuple[str, ...]
) -> None:
    notice = parse_any((DATA / path).read_bytes()).notice
    result = classify(notice, default_rules)
    assert (result.severity.value, result.rules) == (severity, rules)
