"""Public bounce messages and what their corpora expect, read by the real `ceptoar bounces parse --json`.

`tests/data/bounces/corpus.json` names each message, its verdict (permanent:
the MTA gave up; temporary: a warning while it retries) and the failed
addresses its corpus expects (none where the corpus names none). Run as a
script, this prints one line per message and the score:

    .venv/bin/python -m tests.bounce_corpus
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from ceptoar.cli.main import main

DATA = Path(__file__).parent / "data" / "bounces"
# What a report's kind says about the delivery, in the corpora's terms.
VERDICT = {"bounce": "permanent", "delay": "temporary"}


@dataclass(frozen=True)
class Reading:
    name: str
    expected_verdict: str
    expected_addresses: list[str] | None
    verdict: str
    addresses: list[str]

    @property
    def agrees(self) -> bool:
        if self.verdict != self.expected_verdict:
            return False
        return self.expected_addresses is None or self.addresses == self.expected_addresses


def expectations() -> dict[str, dict[str, object]]:
    messages: dict[str, dict[str, object]] = json.loads((DATA / "corpus.json").read_text())["messages"]
    return messages


def parse(path: Path) -> dict[str, object]:
    """`ceptoar bounces parse FILE --json`: the command line's own entry point, in this process."""
    done = CliRunner().invoke(main, ["bounces", "parse", str(path), "--json"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    document: dict[str, object] = json.loads(done.stdout)
    return document


def _addresses(values: object) -> list[str]:
    return sorted({str(v).lower() for v in values}) if isinstance(values, list) else []


def read(name: str, expected: dict[str, object]) -> Reading:
    document = parse(DATA / name)
    recipients = document["recipients"]
    assert isinstance(recipients, list)
    want = expected["addresses"]
    return Reading(
        name=name,
        expected_verdict=str(expected["verdict"]),
        expected_addresses=None if want is None else _addresses(want),
        verdict=VERDICT.get(str(document["kind"]), str(document["kind"])),
        addresses=_addresses([r["address"] for r in recipients]),
    )


def read_all() -> list[Reading]:
    return [read(name, expected) for name, expected in expectations().items()]


def report() -> int:
    readings = read_all()
    for r in readings:
        mark = "agrees   " if r.agrees else "DISAGREES"
        want = "" if r.agrees else f"  (expected {r.expected_verdict} {r.expected_addresses})"
        print(f"{mark} {r.name:38} {r.verdict:9} {', '.join(r.addresses)}{want}")
    agreed = sum(r.agrees for r in readings)
    print(f"score: {agreed} of {len(readings)} messages agree on addresses and verdict")
    return 0 if agreed == len(readings) else 1


if __name__ == "__main__":
    raise SystemExit(report())
