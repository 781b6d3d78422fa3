"""What every command shares: settings, logging, running a coroutine, exit codes.

Exit codes: 0 done; 1 not found or not finished in time; 2 bad input (the
message names what is wrong); 3 a service (broker, database, relay) could
not be reached; 4 the operator did not confirm.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import os
import re
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import aio_pika.exceptions
import click
import sqlalchemy.exc
from pydantic import ValidationError

from ceptoar.config import Settings, get_settings
from ceptoar.errors import CeptoarError, InvalidNotice, RegistryError, UnknownAlert
from ceptoar.log import configure_logging
from ceptoar.model.alert import AlertView
from ceptoar.store import SchemaOutOfDate, Store
from ceptoar.text import printable

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_DECLINED",
    "EXIT_NOT_FOUND",
    "EXIT_OUT_OF_DATE",
    "EXIT_UNREACHABLE",
    "fail",
    "json_line",
    "parse_when",
    "resolve_alert",
    "run",
    "say",
    "settings",
]

EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3
EXIT_DECLINED = 4
EXIT_OUT_OF_DATE = 5

T = TypeVar("T")


def settings() -> Settings:
    """The process's settings, with logging configured; exit 2 naming the bad setting.

    Every file a ceptoar command creates (the database, mail in the
    mailbox, keys, reports) is its owner's alone.
    """
    os.umask(0o077)
    try:
        s = get_settings()
    except ValidationError as exc:
        fail(f"configuration: {exc}", EXIT_BAD_INPUT)
    configure_logging(fmt=s.log_format, level=s.log_level)
    return s


def say(text: object = "", *, err: bool = False, nl: bool = True, multiline: bool = False) -> None:
    """Print what may hold a sender's or a relay's words: control characters are shown, never obeyed."""
    click.echo(printable(text, multiline=multiline), err=err, nl=nl)


def json_line(doc: object) -> str:
    """One JSON document for a terminal: readable text, with control and format characters as escapes."""
    return "".join(
        c if printable(c) == c else f"\\u{ord(c):04x}" for c in json.dumps(doc, ensure_ascii=False)
    )


async def resolve_alert(store: Store, ident: str) -> AlertView:
    """The alert an operator named (alert or notice id, source:notice-id); exit 1 naming the closest ones."""
    try:
        return await store.alerts.resolve(ident)
    except UnknownAlert as exc:
        recent = await store.alerts.recent(since=datetime.now(UTC) - timedelta(days=30))
        near = difflib.get_close_matches(ident, [a.id for a in recent] + [a.source_id for a in recent], n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        fail(f"{exc}{hint}", EXIT_NOT_FOUND)


_SPAN = re.compile(r"^(\d+)\s*([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_when(text: str, now: datetime, *, ago: bool, naive_is_local: bool) -> datetime:
    """A span (`30m`, `24h`, `7d`) before or after `now` (`ago`), or an ISO date-time.

    An ISO time without a zone is local time with `naive_is_local`; else the
    operator is asked to say the zone (a time that decides who gets mail).
    """
    if m := _SPAN.match(text.strip()):
        span = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        return now - span if ago else now + span
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: use 30m, 24h, 7d or an ISO date-time") from exc
    if when.tzinfo is None:
        if not naive_is_local:
            raise click.BadParameter(f"{text!r}: say the time zone, e.g. {text}+09:00")
        when = when.astimezone()
    return when


def fail(message: str, code: int) -> NoReturn:
    say(f"ceptoar: {message}", err=True)
    sys.exit(code)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, turning known failures into a message and an exit code."""
    try:
        return asyncio.run(coro)
    except (InvalidNotice, RegistryError) as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    except UnknownAlert as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    except SchemaOutOfDate as exc:
        fail(str(exc), EXIT_OUT_OF_DATE)
    except CeptoarError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    except (aio_pika.exceptions.AMQPConnectionError, ConnectionError) as exc:
        fail(f"cannot reach the broker or relay: {exc}", EXIT_UNREACHABLE)
    except sqlalchemy.exc.OperationalError as exc:
        fail(f"cannot use the database: {exc.orig}", EXIT_UNREACHABLE)
