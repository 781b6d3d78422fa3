"""Severity rules from a readable TOML file.

Each `[[rule]]` has a name, a description, conditions under `when` (all must
hold; a list means "any of these") and the `severity` it proposes. Every
rule is evaluated, in file order; the most urgent proposal wins and the
result names every rule that proposed it. Nothing matching means `low`, by
the rule `default`. An operator's override wins over the rules and is
recorded as `operator-override`.

    [[rule]]
    name = "cvss-critical"
    description = "CVSS base score 9.0 or higher"
    when = { cvss_min = 9.0 }
    severity = "critical"
"""

from __future__ import annotations

import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ceptoar.errors import CeptoarError
from ceptoar.model.notice import CapCertainty, CapSeverity, CapUrgency, Category, Notice, Severity

__all__ = [
    "DEFAULT_RULES",
    "OVERRIDE_RULE",
    "Classification",
    "Rule",
    "RuleSet",
    "RulesError",
    "classify",
    "load_rules",
]

DEFAULT_RULES = Path(__file__).with_name("default_rules.toml")
OVERRIDE_RULE = "operator-override"
DEFAULT_RULE = "default"


class RulesError(CeptoarError, ValueError):
    """A rules file that cannot be used; the message names the rule and field."""


def _fold(text: str) -> str:
    # NFKC folds full-width letters and digits, so "ＶＰＮ" matches "vpn".
    return unicodedata.normalize("NFKC", text).casefold()


class When(BaseModel):
    """Conditions of a rule; every one given must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cvss_min: Annotated[float, Field(ge=0, le=10)] | None = None
    cvss_max: Annotated[float, Field(ge=0, le=10)] | None = None
    sender_severity: list[Severity] | None = None
    cap_severity: list[CapSeverity] | None = None
    cap_urgency: list[CapUrgency] | None = None
    cap_certainty: list[CapCertainty] | None = None
    known_exploited: bool | None = None
    category: list[Category] | None = None
    keywords: list[Annotated[str, Field(min_length=1)]] | None = None
    source: list[str] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> When:
        if not self.model_fields_set:
            raise ValueError("a rule needs at least one condition")
        return self

    def matches(self, notice: Notice) -> bool:
        return self._ratings_match(notice) and self._content_matches(notice)

    def _ratings_match(self, n: Notice) -> bool:
        score = n.cvss.base_score if n.cvss is not None else None
        if self.cvss_min is not None and (score is None or score < self.cvss_min):
            return False
        if self.cvss_max is not None and (score is None or score > self.cvss_max):
            return False
        if self.sender_severity is not None and n.severity not in self.sender_severity:
            return False
        cap = n.cap
        if self.cap_severity is not None and (cap is None or cap.severity not in self.cap_severity):
            return False
        if self.cap_urgency is not None and (cap is None or cap.urgency not in self.cap_urgency):
            return False
        return self.cap_certainty is None or (cap is not None and cap.certainty in self.cap_certainty)

    def _content_matches(self, n: Notice) -> bool:
        if self.known_exploited is not None and n.known_exploited is not self.known_exploited:
            return False
        if self.category is not None and n.category not in self.category:
            return False
        if self.source is not None and n.source not in self.source:
            return False
        if self.keywords is not None:
            text = _fold(f"{n.title}\n{n.summary}")
            return any(_fold(k) in text for k in self.keywords)
        return True


class Rule(BaseModel):
    """One named rule: when its conditions hold, it proposes `severity`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
    description: Annotated[str, Field(min_length=1)]
    when: When
    severity: Severity

    @field_validator("name")
    @classmethod
    def _reserved(cls, value: str) -> str:
        if value in (OVERRIDE_RULE, DEFAULT_RULE):
            raise ValueError(f"{value!r} is reserved")
        return value


@dataclass(frozen=True)
class Classification:
    """A severity and the names of the rules that decided it."""

    severity: Severity
    rules: tuple[str, ...]
    # With an operator override: what the rules alone would have said.
    computed: Classification | None = None


class RuleSet(BaseModel):
    """An ordered list of rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> RuleSet:
        seen: set[str] = set()
        for r in self.rule:
            if r.name in seen:
                raise ValueError(f"rule name {r.name!r} is used twice")
            seen.add(r.name)
        return self

    def evaluate(self, notice: Notice) -> Classification:
        """The most urgent level proposed by a matching rule, and every rule that proposed it."""
        proposals = [(r.name, r.severity) for r in self.rule if r.when.matches(notice)]
        if not proposals:
            return Classification(Severity.LOW, (DEFAULT_RULE,))
        top = max((level for _, level in proposals), key=lambda level: level.rank)
        return Classification(top, tuple(name for name, level in proposals if level is top))


def load_rules(path: Path | None = None) -> RuleSet:
    """Read and validate a rules file (the shipped default when `path` is None)."""
    source = path or DEFAULT_RULES
    try:
        doc = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesError(f"{source}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: not valid TOML: {exc}") from exc
    try:
        return RuleSet.model_validate(doc)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = list(err["loc"])
            where = ".".join(str(p) for p in loc)
            if len(loc) >= 2 and loc[0] == "rule" and isinstance(loc[1], int):
                rules = doc.get("rule") or []
                index = loc[1]
                named = (
                    rules[index].get("name")
                    if index < len(rules) and isinstance(rules[index], dict)
                    else None
                )
                where = f"rule #{index + 1}" + (f" ({named})" if named else "")
                rest = ".".join(str(p) for p in loc[2:])
                where += f": {rest}" if rest else ""
            problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        raise RulesError(f"{source}: " + "; ".join(problems)) from exc


def classify(notice: Notice, rules: RuleSet) -> Classification:
    """The notice's severity: the operator's override if any, else what the rules say."""
    computed = rules.evaluate(notice)
    if notice.severity_override is not None:
        return Classification(notice.severity_override, (OVERRIDE_RULE,), computed)
    return computed
