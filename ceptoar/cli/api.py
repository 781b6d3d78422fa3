"""`ceptoar api` and `ceptoar feeds`: the HTTP feed endpoint and its credentials."""

from __future__ import annotations

import asyncio

import click

from ceptoar.api.server import serve_api, supervise_workers
from ceptoar.cli.common import EXIT_NOT_FOUND, EXIT_UNREACHABLE, fail, run, say, settings
from ceptoar.feed.cap import cap_source
from ceptoar.runtime import install_stop_signals
from ceptoar.store import Feed, NewFeed, Store

__all__ = ["api", "feeds"]


@click.command()
@click.option("--host", default=None, help="Interface (default CEPTOAR_API_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default CEPTOAR_API_PORT, 8080).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Processes serving the port (default CEPTOAR_API_WORKERS, 1); above one, use PostgreSQL.",
)
@click.option("--worker-of", type=int, default=None, hidden=True, help="A worker of this supervisor's.")
def api(host: str | None, port: int | None, workers: int | None, worker_of: int | None) -> None:
    """Run the HTTP application (feed endpoint, answer pages, portal) until SIGINT or SIGTERM."""
    s = settings()
    host, port, workers = host or s.api_host, port or s.api_port, workers or s.api_workers

    async def _api() -> int:
        stop = asyncio.Event()
        install_stop_signals(stop)
        if workers > 1 and worker_of is None:
            return await supervise_workers(stop, host=host, port=port, workers=workers)
        await serve_api(s, stop, host=host, port=port, supervisor=worker_of)
        return 0

    if worker_of is None:
        say(
            f"feed endpoint on http://{host}:{port} ({workers} process{'es' if workers > 1 else ''})",
            err=True,
        )
    _fast_loop()
    try:
        code = run(_api())
    except OSError as exc:  # the port: taken, or not this host's
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_UNREACHABLE)
    if code:
        fail(f"a worker process could not start (exit code {code})", code)


def _fast_loop() -> None:
    """uvloop for the HTTP processes, where the event loop's own work is a good share of each answer page."""
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@click.group()
def feeds() -> None:
    """Who may post notices to the HTTP endpoint."""


@feeds.command()
@click.argument("name")
@click.option(
    "--source",
    "sources",
    multiple=True,
    help="Another source the feed may post as: a CAP sender as it writes itself, or a CSAF publisher host. "
    "Repeatable.",
)
@click.option("--signed", is_flag=True, help="Also require an HMAC-SHA256 signature of every body.")
def add(name: str, sources: tuple[str, ...], signed: bool) -> None:
    """Register a feed and print its API key (shown only this once)."""
    s = settings()

    async def _add() -> NewFeed:
        async with await Store.open(s.db_url) as store:
            return await store.feeds.add(name, sources=keys, signed=signed, sealer=s.secret_box())

    # A CAP sender such as http://www.aemet.es is stored as the source key ceptoar derives from it.
    keys = [cap_source(x) for x in sources]
    new = run(_add())
    for written, key in zip(sources, keys, strict=True):
        if written != key:
            say(f"feed {new.name}: posts from sender {written} carry the source key {key}")
    say(f"feed {new.name}: API key (store it now; it is not shown again):")
    say(new.key)
    if new.signing_secret:
        say("signing secret for X-Ceptoar-Signature:")
        say(new.signing_secret)


@feeds.command()
@click.argument("name")
def revoke(name: str) -> None:
    """Revoke a feed's key at once."""
    s = settings()

    async def _revoke() -> bool:
        async with await Store.open(s.db_url) as store:
            return await store.feeds.revoke(name)

    if not run(_revoke()):
        fail(f"no active feed {name!r}", EXIT_NOT_FOUND)
    say(f"feed {name}: key revoked")


@feeds.command("list")
def list_() -> None:
    """Feeds, the sources they may post as, and whether they sign."""
    s = settings()

    async def _list() -> list[Feed]:
        async with await Store.open(s.db_url) as store:
            return await store.feeds.all()

    for f in run(_list()):
        state = "revoked" if f.revoked else ("signed" if f.signing_secret else "active")
        say(f"{f.name:<20} {state:<8} {' '.join(f.sources)}")
