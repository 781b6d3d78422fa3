"""`ceptoar validate`: what a document would become, without publishing it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import sqlalchemy.exc

from ceptoar.cli.common import EXIT_BAD_INPUT, fail, json_line, say, settings
from ceptoar.config import Settings
from ceptoar.dispatch.admission import admit
from ceptoar.errors import InvalidNotice
from ceptoar.feed.formats import Parsed, parse_any
from ceptoar.store import SchemaOutOfDate, Store, StoredAlert

__all__ = ["admitted", "content_type_of", "read_notice", "validate"]

_BY_SUFFIX = {".xml": "application/xml", ".cap": "application/cap+xml", ".json": "application/json"}


def content_type_of(file: Path) -> str | None:
    """The content type a notice file's name says, if it says one (else the bytes tell)."""
    return _BY_SUFFIX.get(file.suffix.lower())


def read_notice(file: Path) -> tuple[bytes, Parsed]:
    """A notice file's bytes and what they parse to; exits 2 naming the problem."""
    data = file.read_bytes()
    try:
        return data, parse_any(data, content_type_of(file))
    except InvalidNotice as exc:
        fail(f"{file}: {exc}", EXIT_BAD_INPUT)


def admitted(s: Settings, file: Path, parsed: Parsed, *, then: str) -> StoredAlert | None:
    """What the dispatcher will say of the notice, asked of the store if it can be reached: exit 2 naming
    the field it would refuse (an area code no subscribed local government has, an expiry past, an id
    used before with another sent time); the alert already made from it, if any. `then` ends the
    refusal's message (what did not happen)."""

    async def _admit() -> StoredAlert | None:
        async with await Store.open(s.db_url) as store:
            return await admit(store, parsed.notice, now=datetime.now(UTC))

    try:
        return asyncio.run(_admit())
    except InvalidNotice as exc:
        fail(f"{file}: {exc}{then}", EXIT_BAD_INPUT)
    except (OSError, SchemaOutOfDate, sqlalchemy.exc.SQLAlchemyError) as exc:
        say(f"{file}: not checked against the registry: the store cannot be used ({exc})", err=True)
        return None


def describe(parsed: Parsed) -> dict[str, Any]:
    notice = parsed.notice
    return {
        "format": parsed.format,
        "id": notice.id,
        "source": notice.source,
        "msg_type": notice.msg_type.value,
        "status": notice.status.value,
        "references": notice.references,
        "languages": parsed.languages,
        "notice": notice.model_dump(mode="json", by_alias=True, exclude_defaults=True),
    }


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def validate(file: Path, as_json: bool) -> None:
    """Check a notice (ceptoar JSON, CAP 1.2 or CSAF 2.0) and show it normalised; publishes nothing."""
    _, parsed = read_notice(file)
    stored = admitted(settings(), file, parsed, then="")
    doc = describe(parsed)
    if stored is not None:
        doc["already_received_as"] = stored.alert_id
    if as_json:
        say(json_line(doc))
        return
    n = parsed.notice
    say(f"{file}: valid {parsed.format} notice")
    say(f"  key       {n.source}:{n.id}")
    if n.sender and n.sender != n.source:
        say(f"  sender    {n.sender}")
    say(f"  type      {n.msg_type.value}, status {n.status.value}, TLP:{n.tlp.value}")
    if n.cap_references:
        refs = (f"{r.identifier} ({r.sender}, sent {r.sent})" for r in n.cap_references)
        say("  refers to " + ", ".join(refs))
    elif n.references:
        say(f"  refers to {', '.join(n.references)}")
    say(f"  title     {n.title}")
    say(f"  languages {', '.join(parsed.languages)}")
    say(f"  area      {' '.join(n.area) or 'every organisation'}")
    if stored is not None:
        say(f"  already received as alert {stored.alert_id}: it would not be sent again")
