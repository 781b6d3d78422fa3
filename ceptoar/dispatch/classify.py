"""Severity classification, explainable: the result names every rule that decided it.

The first rule set: CVSS base score bands (FIRST's qualitative scale) and
the sender's own severity hint. Each rule that fires proposes a level; the
most urgent proposal wins, so a notice is critical when either says so.
Without any proposal the notice is `low`, by the rule `default`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ceptoar.feed.notice import Notice, Severity

__all__ = ["Classification", "classify"]

# (rule name, lowest score, level), most urgent first; FIRST CVSS v3.x bands.
CVSS_BANDS: tuple[tuple[str, float, Severity], ...] = (
    ("cvss-critical", 9.0, Severity.CRITICAL),
    ("cvss-high", 7.0, Severity.HIGH),
    ("cvss-medium", 4.0, Severity.MEDIUM),
    ("cvss-low", 0.1, Severity.LOW),
)


@dataclass(frozen=True)
class Classification:
    """A severity and the names of the rules that decided it."""

    severity: Severity
    rules: tuple[str, ...]


def _proposals(notice: Notice) -> list[tuple[str, Severity]]:
    found: list[tuple[str, Severity]] = []
    if notice.cvss is not None:
        score = notice.cvss.base_score
        for name, lowest, level in CVSS_BANDS:
            if score >= lowest:
                found.append((name, level))
                break
    if notice.severity is not None:
        found.append((f"sender-{notice.severity.value}", notice.severity))
    return found


def classify(notice: Notice) -> Classification:
    """The notice's severity and every rule that proposed it."""
    proposals = _proposals(notice)
    if not proposals:
        return Classification(Severity.LOW, ("default",))
    top = max(level.rank for _, level in proposals)
    winners = tuple(name for name, level in proposals if level.rank == top)
    return Classification(next(level for _, level in proposals if level.rank == top), winners)
