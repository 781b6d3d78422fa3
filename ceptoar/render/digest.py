"""What a digest issue's templates get: its number and period, a table of contents, the items of one
variant grouped by category in time order, and the editor's articles (Markdown, as text and as HTML).

Articles are turned into HTML by markdown-it (CommonMark) with raw HTML
off: an article can format its text and link, never inject markup or
script; a `javascript:` link is not made one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from markdown_it import MarkdownIt

from ceptoar.model.digest import Period
from ceptoar.model.notice import Category
from ceptoar.render.labels import CATEGORY_NAMES, SEVERITY_LABELS

__all__ = ["DigestMail", "digest_context"]

_JST: Final = timezone(timedelta(hours=9), "JST")
_MARKDOWN: Final = MarkdownIt("commonmark", {"html": False})


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
        {"title": a["title"], "text": a["markdown"], "html": _MARKDOWN.render(a["markdown"])}
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
