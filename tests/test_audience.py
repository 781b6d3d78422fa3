"""Choosing the audience: area, subscriptions, test status and TLP 2.0."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from ceptoar.dispatch import load_rules
from ceptoar.dispatch.audience import choose_audience, hold_reason
from ceptoar.dispatch.plan import Thread, plan, plan_in_chunks
from ceptoar.feed import parse_notice
from ceptoar.model.alert import AlertView
from ceptoar.model.notice import Notice, Severity
from ceptoar.model.subscriber import Candidate
from tests.harness import notice_doc

_ids = iter(range(1, 10_000))


def _c(code: str, role: str = "primary", **fields: Any) -> Candidate:
    values: dict[str, Any] = {
        "address_id": next(_ids),
        "email": f"{role}@{code}.lg.example",
        "code": code,
        "prefecture": code[:2],
        "role": role,
        "language": "ja",
        "min_severity": "low",
        "categories": (),
        "prefectures": (),
        "wants_tests": False,
        "contact": role == "security",
    }
    values.update(fields)
    return Candidate(**values)


def _notice(**fields: Any) -> Notice:
    return parse_notice(json.dumps(notice_doc(**fields)))


def _emails(cands: list[Candidate]) -> set[str]:
    return {c.email for c in cands}


TOKYO = [_c("130001"), _c("130001", "security"), _c("131016"), _c("131016", "security")]
HOKKAIDO = [_c("010006"), _c("011002"), _c("011002", "security")]
EVERYONE = TOKYO + HOKKAIDO


def test_empty_area_is_everyone() -> None:
    chosen = choose_audience(EVERYONE, notice=_notice(), severity=Severity.MEDIUM)
    assert chosen.recipients == EVERYONE


def test_a_prefecture_takes_in_its_municipalities_and_a_code_one_organisation() -> None:
    tokyo = choose_audience(EVERYONE, notice=_notice(area=["13"]), severity=Severity.MEDIUM)
    assert tokyo.recipients == TOKYO
    sapporo = choose_audience(EVERYONE, notice=_notice(area=["011002"]), severity=Severity.MEDIUM)
    assert _emails(sapporo.recipients) == {"primary@011002.lg.example", "security@011002.lg.example"}


def test_a_prefecture_subscription_adds_outside_addresses() -> None:
    watcher = _c("010006", "security", prefectures=("13",))
    chosen = choose_audience([*TOKYO, watcher], notice=_notice(area=["131016"]), severity=Severity.LOW)
    assert watcher in chosen.recipients


def test_minimum_severity_and_categories_narrow_what_an_address_gets() -> None:
    picky = _c("131016", "backup", min_severity="high")
    vuln_only = _c("131016", "primary", categories=("vulnerability",))
    medium = choose_audience([picky, vuln_only], notice=_notice(category="outage"), severity=Severity.MEDIUM)
    assert medium.recipients == []
    assert medium.removed == {"below-min-severity": 1, "category-not-subscribed": 1}
    high_vuln = choose_audience(
        [picky, vuln_only], notice=_notice(category="vulnerability"), severity=Severity.HIGH
    )
    assert high_vuln.recipients == [picky, vuln_only]


def test_critical_reaches_every_primary_and_security_address_regardless() -> None:
    primary = _c("131016", "primary", min_severity="critical", categories=("outage",))
    security = _c("131016", "security", categories=("outage",))
    backup = _c("131016", "backup", categories=("outage",))
    chosen = choose_audience(
        [primary, security, backup], notice=_notice(category="attack"), severity=Severity.CRITICAL
    )
    assert chosen.recipients == [primary, security]
    assert chosen.removed == {"category-not-subscribed": 1}


def test_tlp_limits_who_may_see_it() -> None:
    plain_security = _c("011002", "security", contact=False)
    cands = [*TOKYO, plain_security]
    amber = choose_audience(cands, notice=_notice(tlp="AMBER"), severity=Severity.HIGH)
    assert {c.role for c in amber.recipients} == {"security"}
    assert amber.removed == {"tlp-amber-needs-security-role": 2}
    strict = choose_audience(cands, notice=_notice(tlp="AMBER+STRICT"), severity=Severity.HIGH)
    assert all(c.contact for c in strict.recipients) and len(strict.recipients) == 2
    assert strict.removed == {"tlp-amber-strict-needs-contact": 3}
    green = choose_audience(cands, notice=_notice(tlp="GREEN"), severity=Severity.HIGH)
    assert green.recipients == cands


def test_red_and_drafts_are_held_with_a_reason() -> None:
    assert "TLP:RED is never fanned out automatically" in (hold_reason(_notice(tlp="RED")) or "")
    assert "draft" in (hold_reason(_notice(status="draft")) or "")
    assert hold_reason(_notice()) is None


def test_test_notices_go_only_to_test_subscribers() -> None:
    tester = _c("131016", "backup", wants_tests=True)
    chosen = choose_audience([*TOKYO, tester], notice=_notice(status="test"), severity=Severity.LOW)
    assert chosen.recipients == [tester]
    assert chosen.removed == {"not-a-test-subscriber": 4}


def test_earlier_recipients_stay_whatever_area_and_subscription_say_but_tlp_applies() -> None:
    old_primary = _c("011002", "primary", min_severity="critical")
    old_security = _c("011002", "security", min_severity="critical")
    update = _notice(area=["13"], tlp="AMBER")
    already = {old_primary.address_id, old_security.address_id}
    chosen = choose_audience(
        [*TOKYO, old_primary, old_security], notice=update, severity=Severity.LOW, already=already
    )
    assert old_security in chosen.recipients
    assert old_primary not in chosen.recipients


def _varied(n: int) -> list[Candidate]:
    """n addresses across prefectures, roles and subscriptions, as a registry holds them."""
    roles, severities = ("primary", "security", "backup"), ("low", "medium", "high", "critical")
    return [
        _c(
            f"{i % 47 + 1:02d}{i % 7:04d}",
            roles[i % 3],
            min_severity=severities[i % 4],
            categories=("vulnerability",) if i % 5 == 0 else (),
            prefectures=("13",) if i % 11 == 0 else (),
            wants_tests=i % 2 == 0,
            contact=i % 6 == 1,
        )
        for i in range(n)
    ]


async def _chunks(candidates: Sequence[Candidate], size: int) -> AsyncIterator[Sequence[Candidate]]:
    for start in range(0, len(candidates), size):
        yield candidates[start : start + size]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"area": ["13", "271004"]},
        {"tlp": "AMBER"},
        {"tlp": "AMBER+STRICT", "severity": "critical"},
        {"status": "exercise"},
        {"tlp": "RED"},
        {"msg_type": "update", "references": ["N-1"]},
    ],
)
async def test_a_plan_made_a_chunk_at_a_time_is_the_plan_of_the_whole_registry(fields: dict[str, Any]) -> None:
    registry = _varied(1000)
    notice = _notice(**fields)
    thread = Thread()
    if notice.references:
        first = _notice(id="N-1")
        parent = AlertView.of_notice(first, severity="high", rules=[], id="20261207-parent00")
        mailed = registry[::4]
        thread = Thread(
            parent=parent,
            members={c.address_id for c in mailed},
            history={c.address_id: [f"<{c.address_id}@ceptoar.example>"] for c in mailed},
        )
    rules = load_rules()
    whole = plan(notice, rules, registry, thread)
    chunked, ids = await plan_in_chunks(notice, rules, _chunks(registry, 97), thread)
    assert ids == [c.address_id for c in whole.audience.recipients]
    assert ids or whole.held, "a plan that reaches no one proves nothing here"
    assert chunked.audience.removed == whole.audience.removed
    assert (chunked.classification, chunked.lifecycle) == (whole.classification, whole.lifecycle)
    assert chunked.threading == whole.threading
    assert (chunked.cancels, chunked.unsent) == (whole.cancels, whole.unsent)
