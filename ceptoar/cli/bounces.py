"""`ceptoar bounces`: read, take in and list what came back to the deliveries' return paths."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from ceptoar.bounces.intake import take_in
from ceptoar.bounces.report import read_report
from ceptoar.bounces.server import ReturnsHandler, start_returns
from ceptoar.bounces.verp import Verp
from ceptoar.cli.common import EXIT_BAD_INPUT, fail, json_line, run, say, settings
from ceptoar.runtime import install_stop_signals
from ceptoar.store import Returned, Store

__all__ = ["bounces"]


@click.group()
def bounces() -> None:
    """Bounces, delays, auto-replies, complaints and replies to the alerts' return paths."""


def _read(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        fail(f"{source}: {exc.strerror or exc}", EXIT_BAD_INPUT)


@bounces.command()
@click.argument("file", metavar="FILE|-")
@click.option("--envelope-to", metavar="ADDRESS", help="The envelope recipient, if known.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def parse(file: str, envelope_to: str | None, as_json: bool) -> None:
    """Print what ceptoar reads from one message; change nothing."""
    report = read_report(_read(file), Verp.from_settings(settings()), envelope_to=envelope_to)
    if as_json:
        say(json_line(report.document()))
        return
    token = (
        "none"
        if report.token is None
        else (f"delivery {report.token.delivery_id}" if report.token.valid else "forged or mistyped")
    )
    say(f"kind     {report.kind}")
    say(f"token    {token}")
    say(f"subject  {report.subject}")
    for r in report.recipients:
        say(f"  {r.address}  {r.action or '-'}  {r.status or '-'}  {r.diagnostic or ''}")
    if report.problem:
        say(f"problem  {report.problem}")


def _maildir(directory: Path) -> list[Path]:
    return sorted(p for sub in ("new", "cur") for p in (directory / sub).glob("*") if p.is_file())


@bounces.command()
@click.argument("files", nargs=-1, metavar="[FILE|-]...")
@click.option(
    "--maildir", type=click.Path(file_okay=False, path_type=Path), help="Every message in a Maildir."
)
@click.option("--envelope-to", metavar="ADDRESS", help="The envelope recipient (an MTA's pipe gives it).")
def ingest(files: tuple[str, ...], maildir: Path | None, envelope_to: str | None) -> None:
    """Record returned messages against their deliveries; what matches none is kept as unmatched."""
    s = settings()
    sources: list[str] = list(files) + [str(p) for p in (_maildir(maildir) if maildir else [])]
    if not sources:
        fail("name files, - for standard input, or --maildir DIR", EXIT_BAD_INPUT)
    messages = [(source, _read(source)) for source in sources]

    async def _ingest() -> list[tuple[str, Returned]]:
        verp = Verp.from_settings(s)
        async with await Store.open(s.db_url) as store:
            return [
                (source, (await take_in(store, verp, data, envelope_to=envelope_to))[1])
                for source, data in messages
            ]

    for source, kept in run(_ingest()):
        say(f"{source}: {kept.outcome}")


@bounces.command()
@click.option("--host", default=None, help="Interface (default CEPTOAR_BOUNCE_HOST, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port (default CEPTOAR_BOUNCE_PORT, 2526)."
)
def serve(host: str | None, port: int | None) -> None:
    """Take in what the relay delivers to the return paths, over SMTP, until SIGINT or SIGTERM."""
    s = settings()
    where, number = host or s.bounce_host, port or s.bounce_port or 2526

    async def _serve() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        async with await Store.open(s.db_url) as store:
            server = await start_returns(
                ReturnsHandler(store, Verp.from_settings(s)), host=where, port=number
            )
            say(f"return paths taken in on {where}:{number}", err=True)
            async with server:
                await stop.wait()

    run(_serve())


@bounces.command()
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
def unmatched(limit: int) -> None:
    """Returned messages that named no delivery, newest first, with why."""
    s = settings()

    async def _list() -> list[Returned]:
        async with await Store.open(s.db_url) as store:
            return await store.returns.unmatched(limit=limit)

    for r in run(_list()):
        at = r.received_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        say(f"{at}  #{r.id}  {r.kind:<10} {r.size:>8} B  {r.subject[:60]}")
        say(f"    {r.outcome}")
