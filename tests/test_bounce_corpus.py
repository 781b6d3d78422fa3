"""`ceptoar bounces parse` on public bounce corpora agrees with what those corpora expect."""

from __future__ import annotations

import pytest

from tests.bounce_corpus import Reading, expectations, read, read_all


@pytest.fixture(scope="module")
def readings() -> dict[str, Reading]:
    return {r.name: r for r in read_all()}


@pytest.mark.parametrize("name", sorted(expectations()))
def test_each_message_is_read_as_its_corpus_expects(readings: dict[str, Reading], name: str) -> None:
    r = readings[name]
    assert r.verdict == r.expected_verdict, f"{name}: read as {r.verdict}"
    if r.expected_addresses is not None:
        assert r.addresses == r.expected_addresses


def test_the_corpus_has_both_verdicts_and_several_senders() -> None:
    corpus = expectations()
    verdicts = [str(e["verdict"]) for e in corpus.values()]
    assert verdicts.count("temporary") >= 5 and verdicts.count("permanent") >= 15
    assert any(name.startswith("sisimai/") for name in corpus)


def test_a_report_that_disagrees_is_counted_as_disagreeing() -> None:
    # The comparison itself: a delay read where the corpus expects a failure does not agree.
    r = read("mailman/dsn_05.txt", {"verdict": "permanent", "addresses": ["userx@example.cz"]})
    assert r.addresses == ["userx@example.cz"] and not r.agrees
