"""`ceptoar templates check`: render every alert template with sample notices and report problems."""

from __future__ import annotations

from pathlib import Path

import click

from ceptoar.cli.common import EXIT_BAD_INPUT, fail, say, settings
from ceptoar.render import default_templates_dir
from ceptoar.render.check import check_templates

__all__ = ["templates"]

# Exit status when a template has an error (warnings alone exit 0).
EXIT_PROBLEMS = 1


@click.group()
def templates() -> None:
    """The alert mail templates (CEPTOAR_TEMPLATES_DIR)."""


@templates.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Templates to check (default: CEPTOAR_TEMPLATES_DIR, else the shipped ones).",
)
@click.option(
    "--sample",
    "samples",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A notice to render them with (JSON, CAP or CSAF); repeatable. Default: examples/*.",
)
def check(directory: Path | None, samples: tuple[Path, ...]) -> None:
    """Render each template in every language, severity and purpose, with and without answer links,
    under StrictUndefined; report undefined names, HTML that does not nest and overlong text lines."""
    s = settings()
    where = directory or s.templates_dir or default_templates_dir()
    chosen = list(samples) or sorted(
        p for p in (default_templates_dir().parent / "examples").glob("*") if p.suffix in (".json", ".xml")
    )
    if not chosen:
        fail("no sample notices: name some with --sample", EXIT_BAD_INPUT)
    findings = check_templates(where, chosen)
    for finding in findings:
        say(str(finding))
    errors = sum(f.level == "error" for f in findings)
    say(f"{where}: {len(chosen)} samples, {errors} errors, {len(findings) - errors} warnings")
    if errors:
        raise SystemExit(EXIT_PROBLEMS)
