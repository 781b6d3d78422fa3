"""Per-recipient reports of an alert: a table, CSV, and a standalone HTML page with a chart.

Each recipient's row carries its organisation's answer and when it was
given; the text and HTML reports add, per prefecture, the share of its
organisations that answered.

The HTML page needs nothing at view time: styles and the chart (inline
SVG of deliveries settled over time) are in the page itself.
"""

from __future__ import annotations

import csv
import html
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ceptoar.model.alert import AlertView
from ceptoar.model.answer import Answer
from ceptoar.registry.prefectures import PREFECTURE_NAMES
from ceptoar.text import fit, width

__all__ = ["COLUMNS", "PrefectureShare", "csv_report", "html_report", "prefecture_shares", "text_report"]

COLUMNS = (
    "code",
    "organisation",
    "address",
    "role",
    "state",
    "attempts",
    "last_reply",
    "queued",
    "sent",
    "updated",
    "answer",
    "answered",
)
_COLOURS = {"sent": "#2e7d32", "failed": "#c62828", "cancelled": "#757575"}


def _row(r: dict[str, Any]) -> list[str]:
    reply = f"{r['last_code']} {r['last_reply']}" if r["last_code"] else (r["last_reply"] or "")
    return [
        r["code"],
        r["name"],
        r["email"],
        r["role"],
        r["state"],
        str(r["attempts"]),
        reply,
        _time(r["created_at"]),
        _time(r["sent_at"]),
        _time(r["updated_at"]),
        Answer(r["answer"]).label if r.get("answer") else "",
        _time(r.get("answered_at")),
    ]


@dataclass(frozen=True)
class PrefectureShare:
    """How many of a prefecture's organisations answered an alert."""

    prefecture: str
    organisations: int
    answered: int

    @property
    def share(self) -> float:
        return self.answered / self.organisations if self.organisations else 0.0


def prefecture_shares(rows: Sequence[dict[str, Any]]) -> list[PrefectureShare]:
    """Per prefecture (by code, in order), its organisations in the report and how many answered."""
    orgs: dict[str, dict[str, bool]] = {}
    for r in rows:
        orgs.setdefault(r["prefecture"], {})[r["code"]] = bool(r.get("answer"))
    return [
        PrefectureShare(PREFECTURE_NAMES.get(p, p), len(codes), sum(codes.values()))
        for p, codes in sorted(orgs.items())
    ]


def _shares_text(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["prefecture  answered  share"]
    for s in prefecture_shares(rows):
        lines.append(f"{s.prefecture}  {s.answered}/{s.organisations}  {s.share:.0%}")
    return "\n".join(lines)


def _time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else ""


def text_report(rows: Sequence[dict[str, Any]]) -> str:
    """For the terminal: the summary first (deliveries by state, the share answered per prefecture),
    then one line per recipient, columns aligned by display width (a Japanese name counts two a
    character)."""
    table = [list(COLUMNS), *(_row(r) for r in rows)]
    widths = [min(max(width(row[i]) for row in table), _WIDEST) for i in range(len(COLUMNS))]
    recipients = "\n".join(
        "  ".join(fit(cell, w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table
    )
    states = Counter(str(r["state"]) for r in rows)
    summary = f"{len(rows)} deliveries: " + ", ".join(f"{state} {n}" for state, n in states.most_common())
    return f"{summary}\n\n{_shares_text(rows)}\n\n{recipients}"


# The widest a column of the terminal report grows, in display columns.
_WIDEST = 40


def csv_report(rows: Sequence[dict[str, Any]]) -> str:
    """The full matrix as CSV."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(_row(r) for r in rows)
    return out.getvalue()


def _chart(timeline: Sequence[tuple[datetime, str]], total: int) -> str:
    """Inline SVG: for each final state, how many deliveries had reached it over time."""
    width, height, pad = 720, 260, 48
    svg = f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
    if not timeline or total == 0:
        return svg + "></svg>"
    start, end = timeline[0][0], timeline[-1][0]
    span = max((end - start).total_seconds(), 1e-3)

    def x(at: datetime) -> float:
        return pad + (width - 2 * pad) * (at - start).total_seconds() / span

    def y(n: int) -> float:
        return height - pad - (height - 2 * pad) * n / total

    lines = []
    for state, colour in _COLOURS.items():
        seen = 0
        points = [f"{x(start):.1f},{y(0):.1f}"]
        for at, s in timeline:
            if s == state:
                seen += 1
                points.append(f"{x(at):.1f},{y(seen):.1f}")
        if seen:
            lines.append(
                f'<polyline class="series" data-state="{state}" data-count="{seen}" fill="none" '
                f'stroke="{colour}" stroke-width="2" points="{" ".join(points)}"/>'
            )
    return (
        svg + ' role="img" aria-label="deliveries over time">'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#333"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#333"/>'
        f'<text x="{pad}" y="{height - pad + 18}" font-size="12">{_time(start)}</text>'
        f'<text x="{width - pad}" y="{height - pad + 18}" font-size="12" text-anchor="end">'
        f"+{span:.1f} s</text>"
        f'<text x="{pad - 6}" y="{pad + 4}" font-size="12" text-anchor="end">{total}</text>'
        f'<text x="{pad - 6}" y="{height - pad}" font-size="12" text-anchor="end">0</text>'
        + "".join(lines)
        + "</svg>"
    )


def html_report(
    alert: AlertView,
    counts: dict[str, int],
    rows: Sequence[dict[str, Any]],
    timeline: Sequence[tuple[datetime, str]],
) -> str:
    """A standalone page: the alert, its counts, the chart and every recipient."""
    e = html.escape
    total = sum(counts.values())
    legend = "".join(
        f'<li><span style="color:{c}">■</span> {s}: {counts.get(s, 0)}</li>' for s, c in _COLOURS.items()
    )
    count_rows = "".join(f"<tr><td>{e(s)}</td><td>{n}</td></tr>" for s, n in sorted(counts.items()))
    body_rows = "".join("<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in _row(r)) + "</tr>" for r in rows)
    header = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    share_rows = "".join(
        f"<tr><td>{e(s.prefecture)}</td><td>{s.answered}</td><td>{s.organisations}</td><td>{s.share:.0%}</td></tr>"
        for s in prefecture_shares(rows)
    )
    return f"""<!DOCTYPE html>
<html lang="ja"><head><meta charset="utf-8"><title>ceptoar report {e(alert.id)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}ul{{list-style:none;padding:0}}</style></head>
<body>
<h1>{e(alert.title)}</h1>
<p>alert {e(alert.id)} · {e(alert.source)}:{e(alert.source_id)} · severity {e(alert.severity)}
({e(", ".join(alert.severity_rules))}) · TLP:{e(alert.tlp)} · {e(alert.state)} · {total} deliveries</p>
<h2>Counts</h2><table id="counts"><tr><th>state</th><th>deliveries</th></tr>{count_rows}</table>
<h2>Deliveries over time</h2>{_chart(timeline, total)}<ul>{legend}</ul>
<h2>Answered, by prefecture</h2><table id="prefectures"><tr><th>prefecture</th><th>answered</th>
<th>organisations</th><th>share</th></tr>{share_rows}</table>
<h2>Recipients</h2><table id="recipients"><tr>{header}</tr>{body_rows}</table>
</body></html>
"""
