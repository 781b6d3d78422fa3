"""`ceptoar api` and `ceptoar feeds`: the HTTP feed endpoint and its credentials."""

from __future__ import annotations

import asyncio

import click

from ceptoar.api import serve_api
from ceptoar.cli.common import EXIT_NOT_FOUND, fail, run, say, settings
from ceptoar.feed.cap import cap_source
from ceptoar.runtime import install_stop_signals
from ceptoar.store import Feed, NewFeed, Store

__all__ = ["api", "feeds"]


@click.command()
@click.option("--host", default=None, help="Interface (default CEPTOAR_API_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default CEPTOAR_API_PORT, 8080).")
def api(host: str | None, port: int | None) -> None:
    """Run the HTTP feed ingestion endpoint (POST /v1/notices) until SIGINT or SIGTERM."""
    s = settings()

    async def _api() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        say(f"feed endpoint on http://{host or s.api_host}:{port or s.api_port}", err=True)
        await serve_api(s, stop, host=host or s.api_host, port=port or s.api_port)

    run(_api())


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
