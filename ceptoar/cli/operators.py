"""`ceptoar operators`: the portal's operator accounts (not subscribers; each with its own key)."""

from __future__ import annotations

import re
import secrets
import sys

import click

from ceptoar.api.portal.ops import hash_key
from ceptoar.cli.common import EXIT_BAD_INPUT, EXIT_NOT_FOUND, fail, run, say, settings
from ceptoar.compose import current_actor
from ceptoar.store import Store
from ceptoar.store.portal import Operator

__all__ = ["operators"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# A key made for the operator: 160 bits, readable aloud in groups.
_KEY_BYTES = 20


def _key(from_stdin: bool) -> str:
    if not from_stdin:
        return secrets.token_urlsafe(_KEY_BYTES)
    key = sys.stdin.readline().rstrip("\n")
    if len(key) < 12:
        fail("the key read from standard input must be at least 12 characters", EXIT_BAD_INPUT)
    return key


@click.group()
def operators() -> None:
    """Operator accounts for the portal's operator pages (/ops)."""


@operators.command()
@click.argument("name")
@click.option("--key-stdin", is_flag=True, help="Read the key from standard input instead of making one.")
def add(name: str, key_stdin: bool) -> None:
    """Create an operator account; the key made for it is shown once (only its argon2 hash is kept)."""
    if not _NAME.fullmatch(name):
        fail(
            f"{name!r}: an operator name is letters, digits, '.', '_', '@' and '-', at most 64",
            EXIT_BAD_INPUT,
        )
    key = _key(key_stdin)
    s = settings()

    async def _add() -> bool:
        async with await Store.open(s.db_url) as store:
            return await store.portal.add_operator(name, hash_key(key), who=current_actor())

    if not run(_add()):
        fail(
            f"operator {name!r} exists already (ceptoar operators rekey {name} gives a new key)",
            EXIT_BAD_INPUT,
        )
    say(f"operator {name} added; sign in at /ops/signin")
    if not key_stdin:
        say(f"key (shown once): {key}")


@operators.command()
@click.argument("name")
@click.option("--key-stdin", is_flag=True, help="Read the new key from standard input instead of making one.")
def rekey(name: str, key_stdin: bool) -> None:
    """Give an operator a new key (and a disabled one its account back); its sessions end."""
    key = _key(key_stdin)
    s = settings()

    async def _rekey() -> bool:
        async with await Store.open(s.db_url) as store:
            return await store.portal.set_operator_key(name, hash_key(key), who=current_actor())

    if not run(_rekey()):
        fail(f"no operator {name!r}", EXIT_NOT_FOUND)
    say(f"operator {name} has a new key; its sessions ended")
    if not key_stdin:
        say(f"key (shown once): {key}")


@operators.command()
@click.argument("name")
def disable(name: str) -> None:
    """Disable an operator account and end its sessions."""
    s = settings()

    async def _disable() -> bool:
        async with await Store.open(s.db_url) as store:
            return await store.portal.set_operator_key(name, None, who=current_actor())

    if not run(_disable()):
        fail(f"no operator {name!r}", EXIT_NOT_FOUND)
    say(f"operator {name} disabled")


@operators.command("list")
def list_() -> None:
    """The operator accounts: name, created, disabled."""
    s = settings()

    async def _list() -> list[Operator]:
        async with await Store.open(s.db_url) as store:
            return await store.portal.operators()

    for o in run(_list()):
        off = f"  disabled {o.disabled_at.astimezone():%Y-%m-%d %H:%M}" if o.disabled_at else ""
        say(f"{o.name:<24} created {o.created_at.astimezone():%Y-%m-%d %H:%M}{off}")
