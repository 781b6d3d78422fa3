"""The first rule set: CVSS bands and the sender's hint, the most urgent winning."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ceptoar.dispatch import classify
from ceptoar.feed import parse_notice
from tests.harness import notice_doc

CRIT_VECTOR = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8


@pytest.mark.parametrize(
    ("fields", "severity", "rules"),
    [
        ({"severity": None}, "low", ("default",)),
        ({"severity": "high"}, "high", ("sender-high",)),
        ({"severity": None, "cvss": {"score": 9.0}}, "critical", ("cvss-critical",)),
        ({"severity": None, "cvss": {"score": 8.9}}, "high", ("cvss-high",)),
        ({"severity": None, "cvss": {"score": 4.0}}, "medium", ("cvss-medium",)),
        ({"severity": None, "cvss": {"score": 3.9}}, "low", ("cvss-low",)),
        ({"severity": None, "cvss": {"score": 0.0}}, "low", ("default",)),
        ({"severity": "low", "cvss": {"vector": CRIT_VECTOR}}, "critical", ("cvss-critical",)),
        ({"severity": "critical", "cvss": {"score": 5.0}}, "critical", ("sender-critical",)),
        ({"severity": "high", "cvss": {"score": 7.5}}, "high", ("cvss-high", "sender-high")),
    ],
)
def test_most_urgent_proposal_wins_and_names_its_rules(
    fields: dict[str, Any], severity: str, rules: tuple[str, ...]
) -> None:
    doc = notice_doc(**fields)
    doc = {k: v for k, v in doc.items() if v is not None}
    result = classify(parse_notice(json.dumps(doc)))
    assert result.severity.value == severity
    assert result.rules == rules
