"""What a digest issue's templates get: its number and period, a table of contents, the items of one
variant grouped by category in time order, and the editor's articles (Markdown, as text and as HTML).

Articles are turned into HTML by markdown-it (CommonMark) with raw HTML
off: an article can format its text and link, never inject markup or
script; a `javascript:` link is not made one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import TYPE_CHECKING, Any, Final

from ceptoar.model.digest import Period

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
from ceptoar.model.notice import Category
from ceptoar.render.labels import CATEGORY_NAMES, SEVERITY_LABELS
from ceptoar.text import columns

__all__ = ["DigestMail", "digest_context", "wrap_columns"]

_JST: Final = timezone(timedelta(hours=9), "JST")


@dataclass(frozen=True)
class DigestMail:
    """An issue as sent (`ceptoar.compose.digest.Planned.content`) and which of its variants to render."""

    content: dict[str, Any]
    variant: int


def digest_context(digest: DigestMail, lang: str) -> dict[str, Any]:
    content = digest.content
    period = Period.parse(content["period"])
    chosen = content["variants"][digest.variant]["items"]
    items = [content["items"][i] for i in chosen]
    sections = []
    for category in Category:
        theirs = [_item(i, lang) for i in items if i["category"] == category.value]
        if theirs:
            sections.append({"name": CATEGORY_NAMES[lang][category], "notices": theirs})
    articles = [
        {"title": a["title"], "text": a["markdown"], "html": _markdown().render(a["markdown"])}
        for a in content["articles"]
    ]
    return {
        "lang": lang,
        "kind": content["kind"],
        "number": content["number"],
        "period": period.label(lang),
        "sections": sections,
        "count": len(items),
        "articles": articles,
    }


@cache
def _markdown() -> MarkdownIt:
    """CommonMark without raw HTML; loaded by the processes that render a digest only."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False})


def _item(item: dict[str, Any], lang: str) -> dict[str, Any]:
    text = item["text"].get(lang) or item["text"]["ja"]
    return {
        "alert_id": item["alert_id"],
        "date": f"{datetime.fromisoformat(item['created_at']).astimezone(_JST):%Y-%m-%d}",
        "severity_label": SEVERITY_LABELS[lang][item["severity"]],
        "title": text["title"],
        "summary": text["summary"],
        "is_update": item["msg_type"] == "update",
        "link": item["link"],
        "tlp": item["tlp"],
    }


_ASCII_WORD: Final = "".join(chr(i) for i in range(33, 127))


def wrap_columns(text: str, width: int = 72) -> str:
    """`text` broken into lines of at most `width` display columns (a Japanese character counts two):
    at a space where the line has one, else between any two characters, as Japanese text is broken."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line, used = "", 0
        for c in paragraph:
            if used + columns(c) > width:
                space = line.rfind(" ")
                # A run of ASCII (a word, a URL, Markdown's `**`) is not broken when it can move whole.
                run = len(line) - len(line.rstrip(_ASCII_WORD)) if c in _ASCII_WORD else 0
                if space > 0:
                    lines.append(line[:space].rstrip())
                    line = line[space + 1 :]
                elif 0 < run < len(line):
                    lines.append(line[:-run])
                    line = line[-run:]
                else:
                    lines.append(line)
                    line = ""
                used = sum(columns(x) for x in line)
            line += c
            used += columns(c)
        lines.append(line)
    return "\n".join(lines)
