"""`ceptoar db`: the database's schema revision, and upgrading it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncEngine

from ceptoar.cli.common import EXIT_OUT_OF_DATE, fail, run, say, settings
from ceptoar.store import migrations
from ceptoar.store.engine import create_engine, dispose

__all__ = ["db"]

T = TypeVar("T")


@click.group()
def db() -> None:
    """The database's schema (Alembic revisions; `ceptoar serve` upgrades as it starts)."""


async def _on_database(work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """`work` on the configured database, without opening it as a Store (which would check its revision)."""
    engine = create_engine(settings().db_url)
    try:
        return await work(engine)
    finally:
        await dispose(engine)


@db.command()
def upgrade() -> None:
    """Bring the database to this ceptoar's revision (a database from before Alembic included)."""

    async def _upgrade(engine: AsyncEngine) -> tuple[migrations.SchemaState, str]:
        return await migrations.state(engine), await migrations.upgrade(engine)

    before, revision = run(_on_database(_upgrade))
    say(f"at revision {revision} (was {before.describe()})")


@db.command()
def current() -> None:
    """Print the database's revision and this ceptoar's; exit 5 when they differ."""
    found = run(_on_database(migrations.state))
    say(f"database: {found.describe()}")
    say(f"ceptoar:  revision {migrations.head()}")
    if found.revision != migrations.head():
        fail(
            "the database is not at this ceptoar's revision: `ceptoar db upgrade` brings it there",
            EXIT_OUT_OF_DATE,
        )
