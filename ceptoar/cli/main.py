"""`ceptoar`: serve, publish, status, and the subscribers and mailbox groups."""

from __future__ import annotations

import asyncio
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import click

from ceptoar import __version__
from ceptoar.api import serve_api
from ceptoar.cli.api import api, feeds
from ceptoar.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_NOT_FOUND,
    fail,
    json_line,
    run,
    say,
    settings,
)
from ceptoar.cli.compose import cancel, compose
from ceptoar.cli.feed import read_notice, validate
from ceptoar.cli.mailbox import mailbox
from ceptoar.cli.operate import alerts, audit, prune, report, resend
from ceptoar.cli.release import release
from ceptoar.cli.rules import classify_command, rules
from ceptoar.cli.subscribers import subscribers
from ceptoar.errors import UnknownAlert
from ceptoar.feed.formats import CONTENT_TYPES
from ceptoar.model.notice import OPERATOR_SOURCE
from ceptoar.model.states import OPEN, DeliveryState
from ceptoar.render import SEVERITY_LABELS
from ceptoar.runtime import install_stop_signals, open_components
from ceptoar.service import run_service
from ceptoar.store import Store

__all__ = ["main"]


@click.group()
@click.version_option(__version__, prog_name="ceptoar")
def main() -> None:
    """ceptoar: security notices from the national feed to every local government."""


main.add_command(subscribers)
main.add_command(mailbox)
main.add_command(rules)
main.add_command(classify_command)
main.add_command(validate)
main.add_command(api)
main.add_command(feeds)
for _command in (compose, cancel, alerts, resend, report, audit, release, prune):
    main.add_command(_command)


@main.command()
@click.option(
    "--api", "with_api", is_flag=True, help="Also run the HTTP feed endpoint (CEPTOAR_API_HOST/PORT)."
)
@click.option(
    "--mailers",
    type=click.IntRange(1, 64),
    default=None,
    help="Processes sending mail (default CEPTOAR_MAILER_PROCESSES, or one per core).",
)
def serve(with_api: bool, mailers: int | None) -> None:
    """Run the dispatcher and the mailers (and the HTTP endpoint) until SIGINT or SIGTERM."""
    s = settings()

    async def _serve() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        parts = [run_service(s, stop, mailer_processes=mailers or s.mailers)]
        if with_api:
            parts.append(serve_api(s, stop, host=s.api_host, port=s.api_port))
        await asyncio.gather(*parts)

    run(_serve())


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def publish(file: Path) -> None:
    """Publish a notice (JSON, CAP 1.2 or CSAF 2.0) to the feed exchange; print its id once confirmed."""
    s = settings()
    body, parsed = read_notice(file)
    notice = parsed.notice
    if notice.source == OPERATOR_SOURCE:
        fail(
            f"{file}: source {OPERATOR_SOURCE!r} is reserved for operators' notices, which "
            "`ceptoar compose` audits before it publishes them; nothing was published",
            EXIT_BAD_INPUT,
        )

    async def _publish() -> None:
        async with AsyncExitStack() as stack:
            c = await open_components(s, stack, name="ceptoar-publish")
            await c.bus.publish_notice(
                body,
                content_type=CONTENT_TYPES[parsed.format],
                message_id=f"{notice.source}:{notice.id}",
                routing_key=f"notice.{parsed.format}",
            )

    run(_publish())
    say(notice.id)


def _status_doc(alert: Any, counts: dict[str, int]) -> dict[str, Any]:
    full = {state.value: counts.get(state.value, 0) for state in DeliveryState}
    return {
        "alert_id": alert.id,
        "notice_id": alert.source_id,
        "source": alert.source,
        "title": alert.title,
        "severity": alert.severity,
        "rules": alert.severity_rules,
        "tlp": alert.tlp,
        "state": alert.state,
        "held_reason": alert.held_reason,
        "thread_id": alert.thread_id,
        "created_at": alert.created_at.isoformat(),
        "total": sum(full.values()),
        "counts": full,
    }


async def _status(store: Store, ident: str, wait: float | None) -> dict[str, Any]:
    deadline = time.monotonic() + (wait or 0)
    while True:
        try:
            alert = await store.alerts.resolve(ident)
            counts = await store.alerts.counts(alert.id)
            settled = alert.state == "held" or not any(counts.get(s.value) for s in OPEN)
            if wait is None or settled:
                return _status_doc(alert, counts)
        except UnknownAlert:
            if wait is None:
                raise
        if time.monotonic() >= deadline:
            fail(f"{ident}: deliveries still open after {wait:g}s", EXIT_NOT_FOUND)
        await asyncio.sleep(0.5)


def progress_line(counts: dict[str, int], width: int = 30) -> str:
    """A progress bar over finished deliveries, then the count in every state that has some."""
    total = sum(counts.values())
    done = total - sum(counts.get(s.value, 0) for s in OPEN)
    filled = round(width * done / total) if total else width
    states = "  ".join(f"{s.value} {counts[s.value]}" for s in DeliveryState if counts.get(s.value))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}  {states}"


async def _watch(store: Store, ident: str) -> dict[str, Any]:
    """Redraw progress until nothing is queued, sending or deferred."""
    tty = sys.stdout.isatty()
    last = ""
    while True:
        try:
            alert = await store.alerts.resolve(ident)
        except UnknownAlert:
            if last != "waiting":
                say(f"waiting for {ident} to be dispatched...", err=True)
                last = "waiting"
            await asyncio.sleep(0.5)
            continue
        counts = await store.alerts.counts(alert.id)
        line = progress_line(counts)
        if line != last:
            click.echo(("\r" + line) if tty else line, nl=not tty)
            last = line
        if alert.state == "held" or not any(counts.get(s.value) for s in OPEN):
            if tty:
                say()
            return _status_doc(alert, counts)
        await asyncio.sleep(0.5)


def _print_status(doc: dict[str, Any]) -> None:
    label = SEVERITY_LABELS["ja"][doc["severity"]]
    say(f"alert    {doc['alert_id']}  ({doc['source']}:{doc['notice_id']})")
    say(f"title    {doc['title']}")
    say(f"severity {label} {doc['severity']}  rules: {', '.join(doc['rules'])}")
    say(f"tlp      TLP:{doc['tlp']}")
    say(f"state    {doc['state']}" + (f": {doc['held_reason']}" if doc["held_reason"] else ""))
    say(f"total    {doc['total']}")
    for state, n in doc["counts"].items():
        if n:
            say(f"  {state:<13}{n:>7}")


@main.command()
@click.argument("ident", metavar="ALERT_OR_NOTICE_ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--wait",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Wait until no delivery is queued, sending or deferred.",
)
@click.option("--watch", is_flag=True, help="Show live progress until nothing is queued or deferred.")
def status(ident: str, as_json: bool, wait: float | None, watch: bool) -> None:
    """Delivery counts by state for an alert (by alert id, notice id or source:notice-id)."""
    s = settings()

    async def _run() -> dict[str, Any]:
        async with await Store.open(s.db_url) as store:
            if watch:
                return await _watch(store, ident)
            return await _status(store, ident, wait)

    doc = run(_run())
    if as_json:
        say(json_line(doc))
    else:
        _print_status(doc)


@main.command("secret-key")
def secret_key() -> None:
    """Print a new key for CEPTOAR_SECRET_KEY, which seals the secrets ceptoar keeps."""
    from ceptoar.sealing import new_key

    say(new_key())
