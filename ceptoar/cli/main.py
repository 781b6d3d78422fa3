"""`ceptoar`: serve, publish, status, and the subscribers and mailbox groups."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import click

from ceptoar import __version__
from ceptoar.api import serve_api
from ceptoar.cli.api import api, feeds
from ceptoar.cli.bounces import bounces
from ceptoar.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_DECLINED,
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
    fail,
    json_line,
    run,
    say,
    settings,
)
from ceptoar.cli.compose import cancel, compose
from ceptoar.cli.db import db
from ceptoar.cli.digest import digest
from ceptoar.cli.dkim import dkim
from ceptoar.cli.escalate import escalate
from ceptoar.cli.feed import admitted, content_type_of, read_notice, validate
from ceptoar.cli.mailbox import mailbox
from ceptoar.cli.operate import alerts, audit, prune, report, resend
from ceptoar.cli.operators import operators
from ceptoar.cli.release import release
from ceptoar.cli.rules import classify_command, rules
from ceptoar.cli.subscribers import subscribers
from ceptoar.cli.templates import templates
from ceptoar.client import Publisher, PublishError
from ceptoar.errors import InvalidNotice, UnknownAlert
from ceptoar.metrics import use_directory
from ceptoar.model.alert import AlertStatus
from ceptoar.model.answer import Answer
from ceptoar.registry.prefectures import PREFECTURE_NAMES
from ceptoar.render import SEVERITY_LABELS
from ceptoar.retry import Stopping, outlast_outages
from ceptoar.runtime import install_stop_signals
from ceptoar.service import DEFAULT_ROLES, AlreadyServed, Role, parse_roles, run_service, single_serve
from ceptoar.store import Silent, Store

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
main.add_command(bounces)
main.add_command(dkim)
main.add_command(db)
main.add_command(templates)
main.add_command(escalate)
main.add_command(operators)
main.add_command(digest)
for _command in (compose, cancel, alerts, resend, report, audit, release, prune):
    main.add_command(_command)


@main.command()
@click.option(
    "--role",
    "role_names",
    default=",".join(sorted(DEFAULT_ROLES)),
    show_default=True,
    help=f"Roles this host runs, with commas ({', '.join(Role)}), or all.",
)
@click.option("--api", "with_api", is_flag=True, help="Also run the HTTP feed endpoint (the api role).")
@click.option(
    "--mailers",
    type=click.IntRange(1, 64),
    default=None,
    help="Processes sending mail, with the mailer role (default CEPTOAR_MAILER_PROCESSES, or one per core).",
)
@click.option(
    "--no-migrate",
    is_flag=True,
    help="Do not upgrade the database's schema: refuse to start on one at another revision.",
)
def serve(role_names: str, with_api: bool, mailers: int | None, no_migrate: bool) -> None:
    """Run this host's roles (by default all but the HTTP endpoint) until SIGINT or SIGTERM.

    Any number of hosts may run any roles against one RabbitMQ and one
    PostgreSQL; on SQLite, one serve per database file. The database is
    first brought to this ceptoar's schema revision (one host at a time),
    unless --no-migrate.
    """
    try:
        roles = parse_roles(role_names) | ({Role.API} if with_api else set())
    except ValueError as exc:
        fail(f"--role: {exc}", EXIT_BAD_INPUT)
    s = settings()
    if s.metrics_port is not None:
        # Before any metric is made: this process and its mailer processes count in one directory.
        use_directory(s.var_dir / "metrics" / str(os.getpid()))

    async def _serve() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        if not no_migrate:
            try:
                await outlast_outages(lambda: _upgrade(s.db_url), stop=stop, what="upgrade the database")
            except Stopping:
                return
        # Even with the api role alone: the service's part opens the metrics port and checks readiness.
        parts = [run_service(s, stop, roles=roles, mailer_processes=mailers or s.mailers)]
        if Role.API in roles:
            parts.append(serve_api(s, stop, host=s.api_host, port=s.api_port))
        await asyncio.gather(*parts)

    try:
        with single_serve(s):
            run(_serve())
    except AlreadyServed as exc:
        fail(str(exc), EXIT_DECLINED)


async def _upgrade(url: str) -> None:
    """Bring the database to this ceptoar's revision, as every role's process then expects it."""
    store = await Store.open(url, upgrade=True)
    await store.close()


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def publish(file: Path) -> None:
    """Publish a notice (JSON, CAP 1.2 or CSAF 2.0) to the feed exchange; print its id once confirmed.

    The notice goes as a national feed's does (`ceptoar.client.Publisher`):
    checked first (against the registry and the alerts already made too, when the store can be
    reached), persistent, confirmed, and refused if no queue takes it.
    """
    s = settings()
    _, parsed = read_notice(file)
    stored = admitted(s, file, parsed, then="; nothing was published")
    if stored is not None:
        say(f"{file}: already received as alert {stored.alert_id}; it is not sent again", err=True)
    try:
        with Publisher(s.amqp_url, prefix=s.prefix) as feed:
            published = feed.publish(file.read_bytes(), content_type=content_type_of(file))
    except InvalidNotice as exc:
        fail(f"{file}: {exc}; nothing was published", EXIT_BAD_INPUT)
    except PublishError as exc:
        fail(f"{file}: not published: {exc}", EXIT_UNREACHABLE)
    say(published.id)


async def _status(store: Store, ident: str, wait: float | None) -> AlertStatus:
    deadline = time.monotonic() + (wait or 0)
    while True:
        try:
            status = await store.status(await store.alerts.resolve(ident))
            if wait is None or status.settled:
                return status
        except UnknownAlert:
            if wait is None:
                raise
        if time.monotonic() >= deadline:
            fail(f"{ident}: deliveries still open after {wait:g}s", EXIT_NOT_FOUND)
        await asyncio.sleep(0.5)


def progress_line(status: AlertStatus, width: int = 30) -> str:
    """A progress bar over finished deliveries, then the count in every state that has some."""
    done = status.total - status.open
    filled = round(width * done / status.total) if status.total else width
    states = "  ".join(f"{state} {n}" for state, n in status.counts.items() if n)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{status.total}  {states}"


async def _watch(store: Store, ident: str) -> AlertStatus:
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
        status = await store.status(alert)
        line = progress_line(status)
        if line != last:
            click.echo(("\r" + line) if tty else line, nl=not tty)
            last = line
        if status.settled:
            if tty:
                say()
            return status
        await asyncio.sleep(0.5)


def _print_status(status: AlertStatus) -> None:
    label = SEVERITY_LABELS["ja"][status.severity or ""]
    say(f"alert    {status.alert_id}  ({status.source}:{status.notice_id})")
    say(f"title    {status.title}")
    say(f"severity {label} {status.severity}  rules: {', '.join(status.rules)}")
    say(f"tlp      TLP:{status.tlp}")
    say(f"state    {status.state}" + (f": {status.held_reason}" if status.held_reason else ""))
    say(f"total    {status.total}")
    for state, n in status.counts.items():
        if n:
            say(f"  {state:<13}{n:>7}")
    orgs = status.organisations
    answers = ", ".join(f"{Answer(a).label} {n}" for a, n in orgs.by_answer.items())
    say(f"organisations {orgs.total}: answered {orgs.answered}" + (f" ({answers})" if answers else ""))
    say(f"  bounced {orgs.bounced}, silent {orgs.silent}, escalated {orgs.escalated}, to call {orgs.to_call}")


def _print_silent(silent: list[Silent]) -> None:
    say(f"silent   {len(silent)} organisations have not answered:")
    for org in silent:
        where = PREFECTURE_NAMES.get(org.prefecture, org.prefecture)
        last = org.last.astimezone().strftime("%m-%d %H:%M")
        states = ", ".join(f"{a} {s}" for a, s in zip(org.addresses, org.states, strict=True))
        say(f"  {org.code} {org.name} ({where})  last {last}  {states}")


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
@click.option("--silent", "list_silent", is_flag=True, help="Also list the organisations with no answer.")
def status(ident: str, as_json: bool, wait: float | None, watch: bool, list_silent: bool) -> None:
    """Delivery counts by state and organisations' answers for an alert (by alert id, notice id or
    source:notice-id)."""
    s = settings()

    async def _run() -> tuple[AlertStatus, list[Silent]]:
        async with await Store.open(s.db_url) as store:
            try:
                found = await (_watch(store, ident) if watch else _status(store, ident, wait))
            except UnknownAlert:
                if refused := await store.rejections.of_notice(ident):
                    last = refused[0]
                    field = f" (field {last.field})" if last.field else ""
                    when = last.at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
                    said = f"{ident}: no alert; the notice was refused at {when}{field}: {last.reason}"
                    fail(said, EXIT_NOT_FOUND)
                raise
            silent = await store.returns.silent(found.alert_id or "") if list_silent else []
            return found, silent

    found, silent = run(_run())
    if as_json:
        doc = found.model_dump(mode="json")
        if list_silent:
            doc["silent"] = [
                {
                    "code": o.code,
                    "name": o.name,
                    "prefecture": o.prefecture,
                    "addresses": o.addresses,
                    "states": o.states,
                    "last": o.last.isoformat(),
                }
                for o in silent
            ]
        say(json_line(doc))
        return
    _print_status(found)
    if list_silent:
        _print_silent(silent)


@main.command("secret-key")
def secret_key() -> None:
    """Print a new key for CEPTOAR_SECRET_KEY, which seals the secrets ceptoar keeps."""
    from ceptoar.sealing import new_key

    say(new_key())
