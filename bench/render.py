"""Per-recipient message building: ceptoar's renderer beside one EmailMessage per recipient.

    python bench/render.py [--recipients 3576] [--runs 5]

Both build a complete alert mail (Japanese subject, text and HTML parts,
UTF-8, base64) for every address of the registry. The reference builds a
fresh EmailMessage per recipient, as a plain script would; ceptoar renders
once per alert and language and adds each recipient's To and Message-ID.
Prints min/median/max per run and per message, and the ratio.
"""

from __future__ import annotations

import argparse
import email.policy
import json
import statistics
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ceptoar.feed import parse_notice
from ceptoar.model.alert import AlertView
from ceptoar.registry import read_registry
from ceptoar.render import Renderer, default_templates_dir

REPO = Path(__file__).resolve().parents[1]


def _alert() -> AlertView:
    notice = parse_notice((REPO / "examples" / "notice.json").read_bytes())
    return AlertView.of_notice(notice, severity="critical", rules=["cvss-critical"], id="20261128-bench000")


def ceptoar_messages(alert: AlertView, emails: list[str]) -> int:
    renderer = Renderer(default_templates_dir(), sender="alerts@ceptoar.example", sender_name="CEPTOAR")
    total = 0
    for i, to in enumerate(emails):
        total += len(renderer.message(alert, language="ja", to=to, message_id=f"<{alert.id}.{i}@c.example>"))
    return total


def reference_messages(alert: AlertView, emails: list[str]) -> int:
    text = alert.notice["summary"] + "\n\n" + alert.notice["body"]
    total = 0
    for i, to in enumerate(emails):
        msg = EmailMessage(policy=email.policy.SMTP)
        msg["From"] = "CEPTOAR <alerts@ceptoar.example>"
        msg["To"] = to
        msg["Subject"] = "【緊急】" + alert.title
        msg["Message-ID"] = f"<{alert.id}.{i}@c.example>"
        msg.set_content(text, charset="utf-8", cte="base64")
        msg.add_alternative(f"<p>{text}</p>", subtype="html", charset="utf-8", cte="base64")
        total += len(msg.as_bytes())
    return total


def _time(
    fn: Callable[[AlertView, list[str]], int], alert: AlertView, emails: list[str], runs: int
) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(alert, emails)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipients", type=int, default=3576)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = read_registry(REPO / "subscribers" / "registry.csv")
    emails = [rows[i % len(rows)].email for i in range(args.recipients)]
    alert = _alert()
    results = {
        "ceptoar": _time(ceptoar_messages, alert, emails, args.runs),
        "reference": _time(reference_messages, alert, emails, args.runs),
    }
    n = len(emails)
    print(f"{n} messages, {args.runs} runs")
    print(f"{'':<10} {'min s':>8} {'median s':>9} {'max s':>8} {'µs/msg':>8}")
    for name, times in results.items():
        med = statistics.median(times)
        print(f"{name:<10} {min(times):>8.3f} {med:>9.3f} {max(times):>8.3f} {med / n * 1e6:>8.1f}")
    ceptoar_s = statistics.median(results["ceptoar"])
    reference_s = statistics.median(results["reference"])
    print(f"ceptoar_s={ceptoar_s:.3f} reference_s={reference_s:.3f} ratio={ceptoar_s / reference_s:.3f}")
    print(json.dumps({"messages": n, "ceptoar_s": ceptoar_s, "reference_s": reference_s}))


if __name__ == "__main__":
    main()
