"""`ceptoar db`: the database's schema revision, and upgrading it."""

from __future__ import annotations

import click

from ceptoar.cli.common import EXIT_OUT_OF_DATE, fail, run, say, settings
from ceptoar.store import migrations
from ceptoar.store.engine import create_engine, dispose

__all__ = ["db"]


@click.group()
def db() -> None:
    """The database's schema (Alembic revisions; `ceptoar serve` upgrades as it starts)."""


@db.command()
def upgrade() -> None:
    """Bring the database to this ceptoar's revision (a database from before Alembic included)."""
    s = settings()

    async def _upgrade() -> tuple[migrations.SchemaState, str]:
        engine = create_engine(s.db_url)
        try:
            before = await migrations.state(engine)
            return before, await migrations.upgrade(engine)
        finally:
            await dispose(engine)

    before, revision = run(_upgrade())
    say(f"at revision {revision} (was {before.describe()})")


@db.command()
def current() -> None:
    """Print the database's revision and this ceptoar's; exit 5 when they differ."""
    s = settings()

    async def _current() -> migrations.SchemaState:
        engine = create_engine(s.db_url)
        try:
            return await migrations.state(engine)
        finally:
            await dispose(engine)

    found = run(_current())
    say(f"database: {found.describe()}")
    say(f"ceptoar:  revision {migrations.head()}")
    if found.revision != migrations.head():
        fail(
            "the database is not at this ceptoar's revision: `ceptoar db upgrade` brings it there",
            EXIT_OUT_OF_DATE,
        )
