"""The database's schema, migrated with Alembic: one revision per change, in `schema/versions/`.

- A new database is created at the head revision (0001 is schema 12, the
  baseline: `ceptoar.store.baseline`).
- A database from before Alembic (schema versions 1 to 12) is brought to
  schema 12 by the steps it had (`ceptoar.store.legacy`), stamped 0001 and
  upgraded from there.
- Only `ceptoar db upgrade` and `ceptoar serve` upgrade (`upgrade`); every
  other command creates a new database but refuses one at another
  revision (`check`), naming what to run.

An upgrade runs in one transaction, revisions and the version they record
together. On PostgreSQL it first takes a transaction-level advisory lock:
of several processes upgrading at once (hosts starting together), one
migrates and the others find the work done once it commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ceptoar.errors import CeptoarError
from ceptoar.store import legacy
from ceptoar.store.engine import advisory_key

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

__all__ = [
    "BASELINE",
    "HEAD",
    "SchemaOutOfDate",
    "SchemaState",
    "alembic_config",
    "check",
    "head",
    "script_head",
    "state",
    "upgrade",
]

SCRIPTS = Path(__file__).with_name("schema")
# The newest revision under schema/versions (tests/test_migrations.py checks that they agree). Named
# here so that opening a database at it needs no Alembic: importing Alembic costs a process 11 MB.
HEAD = "0005"
# The revision a database from before Alembic is stamped at once it is at schema 12.
BASELINE = "0001"
_LOCK = advisory_key("migrate")


class SchemaOutOfDate(CeptoarError):
    """The database is not at the revision this ceptoar works with."""


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema is."""

    # Alembic's revision; None before Alembic or for a new database.
    revision: str | None
    # The schema version of a database from before Alembic.
    legacy: int | None
    # No tables at all: a new database.
    empty: bool

    def describe(self) -> str:
        if self.empty:
            return "a new database (no tables)"
        if self.legacy is not None:
            return f"schema version {self.legacy}, from before Alembic"
        return f"revision {self.revision}"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for ceptoar's revisions; with `connection`, the one they run on."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The revision this ceptoar's tables are at."""
    return HEAD


@cache
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def script_head() -> str | None:
    """The newest revision the scripts under schema/versions make (HEAD, unless someone forgot it)."""
    return _scripts().get_current_head()


def _state(conn: Connection) -> SchemaState:
    tables = inspect(conn).get_table_names()
    revision = None
    if "alembic_version" in tables:
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return SchemaState(revision, legacy.schema_version(conn), not tables)


async def state(engine: AsyncEngine) -> SchemaState:
    async with engine.connect() as conn:
        return await conn.run_sync(_state)


def _upgrade(conn: Connection) -> str:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
    found = _state(conn)
    if found.revision == HEAD:
        return HEAD  # nothing to do, and no Alembic to load for it
    from alembic import command

    config = alembic_config(conn)
    if found.legacy is not None:
        legacy.to_schema_12(conn)
        command.stamp(config, BASELINE)
    command.upgrade(config, "head")
    return head()


async def upgrade(engine: AsyncEngine) -> str:
    """Bring the database to the head revision, whatever it was at; the revision."""
    async with engine.begin() as conn:
        return await conn.run_sync(_upgrade)


async def check(engine: AsyncEngine) -> None:
    """Create a new database's tables; SchemaOutOfDate for a database at another revision."""
    found = await state(engine)
    if found.empty:
        await upgrade(engine)
        return
    if found.revision == head():
        return
    if found.legacy is None and found.revision is not None and not _known(found.revision):
        raise SchemaOutOfDate(
            f"the database is at {found.describe()}, which this ceptoar does not know (revision {head()} is "
            "its newest): it was upgraded by a newer ceptoar"
        )
    raise SchemaOutOfDate(
        f"the database is at {found.describe()} and this ceptoar needs revision {head()}: run "
        "`ceptoar db upgrade`, or start `ceptoar serve`, which upgrades it"
    )


def _known(revision: str) -> bool:
    scripts = _scripts()
    return any(script.revision == revision for script in scripts.walk_revisions())
