"""`ceptoar mailbox`: run the built-in subscriber mailbox and read what it holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosmtplib
import click

from ceptoar.cli.common import EXIT_BAD_INPUT, EXIT_NOT_FOUND, fail, run, say, settings
from ceptoar.mailbox import MaildirHandler, count, list_messages, read_message, start_mailbox
from ceptoar.mailbox.dsn import Bouncer, answer_reply
from ceptoar.mailbox.limits import RelayLimits
from ceptoar.model.answer import ANSWER_WORDS, Answer
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
@click.option(
    "--vacation",
    multiple=True,
    metavar="ADDRESS",
    help="Keep this address's mail and answer it with an RFC 3834 out-of-office reply. Repeatable.",
)
@click.option(
    "--bounce-after",
    type=float,
    default=0.5,
    show_default=True,
    help="Seconds before a DSN or an auto-reply.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=None,
    help="Greet sessions over this many at once with 421 4.7.0 and close them, as a relay does.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Refuse messages over this many in the last second with 451 4.7.1, as a relay does.",
)
@click.option(
    "--discard",
    is_flag=True,
    help="Accept every message and file none, as Postfix's smtp-sink does (for benchmarks).",
)
@_dir_option
def serve(
    host: str,
    port: int,
    unknown: tuple[str, ...],
    returns: str | None,
    vacation: tuple[str, ...],
    bounce_after: float,
    max_connections: int | None,
    rate: float | None,
    discard: bool,
    root: Path | None,
) -> None:
    """Accept mail over SMTP until SIGINT or SIGTERM."""
    directory = _root(root)
    bouncer = None
    if unknown or vacation:
        bouncer = Bouncer(_addresses(unknown), _returns(returns), bounce_after, away=_addresses(vacation))
    limits = None
    if max_connections is not None or rate is not None:
        limits = RelayLimits(max_connections=max_connections, rate=rate)

    async def _serve() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        handler = MaildirHandler(directory, bouncer=bouncer, limits=limits, discard=discard)
        server = await start_mailbox(handler, host=host, port=port)
        say(f"mailbox listening on {host}:{port}, storing in {directory}", err=True)
        async with server:
            await stop.wait()

    run(_serve())


def _addresses(entries: tuple[str, ...]) -> set[str]:
    """Addresses given one by one, or as files of one address a line."""
    addresses: set[str] = set()
    for entry in entries:
        path = Path(entry)
        if "@" not in entry and path.is_file():
            addresses |= {
                line.strip().lower() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
            }
        else:
            addresses.add(entry.lower())
    return addresses


def _returns(returns: str | None) -> tuple[str, int]:
    """Where the return paths are taken in: HOST:PORT, else the configured bounce host and port."""
    s = settings()
    where = returns or f"{s.bounce_host}:{s.bounce_port or 2526}"
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        fail(f"--returns {where!r}: give HOST:PORT", EXIT_BAD_INPUT)
    return host, int(port)


@mailbox.command()
@click.argument("address")
@click.argument("number", type=click.IntRange(1))
@click.option(
    "--answer",
    type=click.Choice([w for a in Answer for w in ANSWER_WORDS[a]]),
    default="受領",
    show_default=True,
    help="The first line of the reply.",
)
@click.option("--returns", metavar="HOST:PORT", default=None, help="Where the reply is delivered.")
@_dir_option
def reply(address: str, number: int, answer: str, returns: str | None, root: Path | None) -> None:
    """Answer message NUMBER of ADDRESS as its subscriber would: a reply to its Reply-To."""
    try:
        original = read_message(_root(root), address, number)
    except IndexError as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    to, message = answer_reply(original, address=address, first_line=answer)
    host, port = _returns(returns)

    async def _send() -> None:
        async with aiosmtplib.SMTP(hostname=host, port=port, timeout=30) as smtp:
            await smtp.sendmail(address, [to], message)

    run(_send())
    say(f"{address} answered {answer} to {to}")


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
        say(_lines(msg.as_string()), multiline=True)
        return
    for name in ("From", "To", "Subject", "Date", "Message-ID"):
        say(f"{name}: {msg.get(name, '')}")
    say()
    part = msg.get_body(preferencelist=("html",) if html else ("plain",))
    say(_lines(part.get_content()) if part is not None else "", multiline=True)


def _lines(text: str) -> str:
    """Mail's CRLF line ends as the terminal's: a CR that ends a line is no control character to show."""
    return text.replace("\r\n", "\n")
