"""`ceptoar rules check` and `ceptoar classify`: the severity rules, explained without sending."""

from __future__ import annotations

from pathlib import Path

import click

from ceptoar.cli.common import EXIT_BAD_INPUT, fail, json_line, say, settings
from ceptoar.cli.feed import read_notice
from ceptoar.dispatch.rules import OVERRIDE_RULE, RulesError, classify, load_rules
from ceptoar.render import SEVERITY_LABELS

__all__ = ["classify_command", "rules"]


@click.group()
def rules() -> None:
    """The severity rules file."""


@rules.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False)
def check(file: Path | None) -> None:
    """Validate a rules file (default: CEPTOAR_RULES, else the shipped rules) and list its rules."""
    path = file or settings().rules
    try:
        ruleset = load_rules(path)
    except RulesError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    say(f"{path or 'default rules'}: {len(ruleset.rule)} rules, valid")
    for n, r in enumerate(ruleset.rule, start=1):
        say(f"{n:>3}. {r.name:<22} {r.severity.value:<9} {r.description}")


@click.command("classify")
@click.argument("notice_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--rules",
    "rules_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Rules file (default: CEPTOAR_RULES, else the shipped rules).",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"severity": ..., "rules": [...]}.')
def classify_command(notice_file: Path, rules_file: Path | None, as_json: bool) -> None:
    """Explain the severity a notice would get, and which rules decided it; sends nothing."""
    try:
        ruleset = load_rules(rules_file or settings().rules)
    except RulesError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    notice = read_notice(notice_file)[1].notice
    result = classify(notice, ruleset)
    why = {r.name: r.description for r in ruleset.rule} | {
        OVERRIDE_RULE: "the operator's override",
        "default": "no rule matched",
    }
    if as_json:
        doc: dict[str, object] = {"severity": result.severity.value, "rules": list(result.rules)}
        if result.computed is not None:
            doc["computed"] = {
                "severity": result.computed.severity.value,
                "rules": list(result.computed.rules),
            }
        say(json_line(doc))
        return
    say(f"{SEVERITY_LABELS['ja'][result.severity.value]} {result.severity.value}")
    for name in result.rules:
        say(f"  {name}: {why[name]}")
    if (computed := result.computed) is not None:
        say(f"  (the rules alone: {computed.severity.value} by {', '.join(computed.rules)})")
