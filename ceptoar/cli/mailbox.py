"""`ceptoar mailbox`: run the built-in subscriber mailbox and read what it holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from ceptoar.cli.common import EXIT_BAD_INPUT, EXIT_NOT_FOUND, fail, run, say, settings
from ceptoar.mailbox import MaildirHandler, count, list_messages, read_message, start_mailbox
from ceptoar.mailbox.dsn import Bouncer
from ceptoar.runtime import install_stop_signals

__all__ = ["mailbox"]

_dir_option = click.option(
    "--dir",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Mailbox root (default: var/mailbox under CEPTOAR_VAR_DIR).",
)


def _root(root: Path | None) -> Path:
    return root if root is not None else settings().mailbox_dir


@click.group()
def mailbox() -> None:
    """The built-in mailbox: an SMTP server filing mail in a Maildir per recipient."""


@mailbox.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=2525, show_default=True, type=int)
@click.option(
    "--unknown",
    "unknown",
    multiple=True,
    metavar="ADDRESS|FILE",
    help="Accept mail for this address (or each address in FILE, one a line), then bounce it "
    "with an RFC 3464 DSN to its envelope sender, as a relay does. Repeatable.",
)
@click.option(
    "--returns",
    metavar="HOST:PORT",
    default=None,
    help="Where DSNs are delivered (default CEPTOAR_BOUNCE_HOST:CEPTOAR_BOUNCE_PORT).",
)
@click.option("--bounce-after", type=float, default=0.5, show_default=True, help="Seconds before a DSN.")
@_dir_option
def serve(
    host: str,
    port: int,
    unknown: tuple[str, ...],
    returns: str | None,
    bounce_after: float,
    root: Path | None,
) -> None:
    """Accept mail over SMTP until SIGINT or SIGTERM."""
    directory = _root(root)
    bouncer = _bouncer(unknown, returns, bounce_after) if unknown else None

    async def _serve() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        server = await start_mailbox(MaildirHandler(directory, bouncer=bouncer), host=host, port=port)
        say(f"mailbox listening on {host}:{port}, storing in {directory}", err=True)
        async with server:
            await stop.wait()

    run(_serve())


def _bouncer(unknown: tuple[str, ...], returns: str | None, after: float) -> Bouncer:
    addresses: set[str] = set()
    for entry in unknown:
        path = Path(entry)
        if "@" not in entry and path.is_file():
            addresses |= {
                line.strip().lower() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
            }
        else:
            addresses.add(entry.lower())
    s = settings()
    where = returns or f"{s.bounce_host}:{s.bounce_port or 2526}"
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        fail(f"--returns {where!r}: give HOST:PORT", EXIT_BAD_INPUT)
    return Bouncer(addresses, (host, int(port)), after)


@mailbox.command("count")
@click.argument("address", required=False)
@_dir_option
def count_(address: str | None, root: Path | None) -> None:
    """Messages held for ADDRESS, or for every address."""
    say(count(_root(root), address))


@mailbox.command("ls")
@click.argument("address")
@_dir_option
def ls(address: str, root: Path | None) -> None:
    """List the messages of ADDRESS, oldest first."""
    entries = list_messages(_root(root), address)
    if not entries:
        fail(f"no messages for {address}", EXIT_NOT_FOUND)
    for e in entries:
        say(f"{e.number:>4}  {e.date}  {e.message_id}  {e.subject}")


@mailbox.command()
@click.argument("address")
@click.argument("number", type=int)
@click.option("--html", is_flag=True, help="Show the HTML part instead of the text part.")
@click.option("--raw", is_flag=True, help="Show the message as stored.")
@_dir_option
def show(address: str, number: int, html: bool, raw: bool, root: Path | None) -> None:
    """Show message NUMBER (from 1) of ADDRESS: headers, then the text part."""
    try:
        msg = read_message(_root(root), address, number)
    except IndexError as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    if raw:
        say(msg.as_string(), multiline=True)
        return
    for name in ("From", "To", "Subject", "Date", "Message-ID"):
        say(f"{name}: {msg.get(name, '')}")
    say()
    part = msg.get_body(preferencelist=("html",) if html else ("plain",))
    say(part.get_content() if part is not None else "", multiline=True)
