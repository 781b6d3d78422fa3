"""`ceptoar templates check`: render every template with sample notices, and say what is wrong.

Each sample notice is rendered in every language, at every severity, for
every purpose (the alert, a reminder, a backup copy), with and without
answer links, under StrictUndefined, as the mailer renders it; and a
digest issue listing every sample (and one listing none) with a Markdown
article, in every language. Reported:

- errors: a template that does not compile or names a value the context
  lacks; HTML whose tags do not nest (an end tag that closes nothing open,
  an element left open); a text line longer than SMTP allows (998 octets);
- warnings: a text line wider than 78 columns (RFC 5322's recommendation,
  a Japanese character counting two), which some mail clients wrap badly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from itertools import cycle
from pathlib import Path
from typing import Final, Literal

from jinja2 import TemplateError

from ceptoar.feed.formats import parse_any
from ceptoar.model.alert import AlertView
from ceptoar.model.escalation import Purpose
from ceptoar.model.notice import LANGUAGES, Notice
from ceptoar.render.digest import DigestMail
from ceptoar.render.mail import SEVERITY_LABELS, Renderer
from ceptoar.store.digests import DIGEST_SOURCE
from ceptoar.text import width

__all__ = ["Finding", "check_templates", "html_problems", "width"]

# Elements that have no end tag.
_VOID: Final = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    ]
)
_WIDEST: Final = 78
_LONGEST_OCTETS: Final = 998


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    # Where: the sample, language, severity, purpose and whether links were on.
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


class _Nesting(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, int]] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _VOID:
            self.open.append((tag, self.getpos()[0]))

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        if not any(name == tag for name, _ in self.open):
            self.problems.append(f"line {self.getpos()[0]}: </{tag}> closes nothing open")
            return
        while self.open:
            name, line = self.open.pop()
            if name == tag:
                return
            self.problems.append(f"line {line}: <{name}> is not closed before </{tag}>")


def html_problems(html: str) -> list[str]:
    """Tags that do not nest in `html`."""
    parser = _Nesting()
    parser.feed(html)
    parser.close()
    left = [f"line {line}: <{name}> is never closed" for name, line in parser.open]
    return parser.problems + left


def _text_findings(text: str, where: str) -> Iterator[Finding]:
    for n, line in enumerate(text.splitlines(), start=1):
        if len(line.encode("utf-8")) > _LONGEST_OCTETS:
            yield Finding("error", where, f"text line {n} is {len(line.encode())} octets, over SMTP's 998")
        elif (w := width(line)) > _WIDEST:
            yield Finding("warning", where, f"text line {n} is {w} columns wide: {line[:30]}…")


def check_templates(templates_dir: Path, samples: Iterable[Path]) -> list[Finding]:
    """Everything wrong with the templates in `templates_dir`, rendered with each sample notice."""
    findings: list[Finding] = []
    renderers = {
        links: Renderer(
            templates_dir, sender="alerts@ceptoar.example", sender_name="CEPTOAR", answer_links=links
        )
        for links in (False, True)
    }
    findings += [Finding("error", "templates", e) for e in renderers[False].load_templates()]
    notices = []
    for sample in samples:
        try:
            notice = parse_any(sample.read_bytes()).notice
        except Exception as exc:  # a sample that is no notice is the sample's problem, said as such
            findings.append(Finding("error", sample.name, f"not a notice ceptoar accepts: {exc}"))
            continue
        notices.append(notice)
        for severity in SEVERITY_LABELS["ja"]:
            alert = AlertView.of_notice(notice, severity=severity, rules=["check"], id="20261207-check000")
            for lang in LANGUAGES:
                for purpose in Purpose:
                    for links, renderer in renderers.items():
                        where = f"{sample.name} {lang} {severity} {purpose}{' links' if links else ''}"
                        try:
                            rendered = renderer.render(alert, lang, purpose)
                        except TemplateError as exc:
                            findings.append(Finding("error", where, f"{exc.__class__.__name__}: {exc}"))
                            continue
                        findings += _text_findings(rendered.text, where)
                        findings += [
                            Finding("error", where, f"HTML: {p}") for p in html_problems(rendered.html)
                        ]
    findings += _digest_findings(renderers[False], notices)
    return _unique(findings)


_ARTICLE: Final = "**Bold**, a [link](https://www.example.org/), and a list:\n\n1. one\n2. two\n"


def _title_summary(notice: Notice, lang: str) -> dict[str, str]:
    text = notice.text_for(lang)
    return {"title": text.title, "summary": text.summary}


def _digest_findings(renderer: Renderer, notices: list[Notice]) -> Iterator[Finding]:
    """A digest issue that lists every sample notice, and one that lists none, in every language."""
    items = [
        {
            "alert_id": f"20261207-check{n:03d}",
            "created_at": "2026-11-10T09:00:00+09:00",
            "severity": severity,
            "category": notice.category.value,
            "tlp": notice.tlp.value,
            "msg_type": notice.msg_type.value,
            "text": {lang: _title_summary(notice, lang) for lang in LANGUAGES},
            "link": "https://ceptoar.example/portal/alerts/20261207-check",
        }
        for n, (notice, severity) in enumerate(zip(notices, cycle(SEVERITY_LABELS["ja"]), strict=False))
    ]
    content = {
        "kind": "monthly",
        "period": "2026-11",
        "number": 1,
        "articles": [{"title": "Check", "markdown": _ARTICLE}],
        "items": items,
        "variants": [{"items": list(range(len(items))), "addresses": []}, {"items": [], "addresses": []}],
    }
    if not notices:
        return
    issue = AlertView.of_notice(notices[0], severity="low", rules=["digest"], id="20261207-check999")
    issue = replace(issue, source=DIGEST_SOURCE, source_id="monthly-2026-11")
    for variant in (0, 1):
        for lang in LANGUAGES:
            where = f"digest {lang} {'every sample' if variant == 0 else 'no notice'}"
            try:
                rendered = renderer.render(issue, lang, digest=DigestMail(content, variant))
            except TemplateError as exc:
                yield Finding("error", where, f"{exc.__class__.__name__}: {exc}")
                continue
            yield from _text_findings(rendered.text, where)
            yield from (Finding("error", where, f"HTML: {p}") for p in html_problems(rendered.html))


def _unique(findings: list[Finding]) -> list[Finding]:
    """One finding per message and level: the same fault shows in many renderings; the first says where."""
    seen: dict[tuple[str, str], Finding] = {}
    for f in findings:
        seen.setdefault((f.level, f.message), f)
    return list(seen.values())
