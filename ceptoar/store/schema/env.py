"""Alembic's environment for ceptoar's database.

ceptoar runs it with a connection of its own (`ceptoar.store.migrations`,
in `config.attributes["connection"]`). Run by the `alembic` command (as
`alembic check` in the test command), it opens CEPTOAR_DATABASE_URL, or
the URL given with `-x url=...`.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from ceptoar.store.tables import metadata


def _run(connection: Connection) -> None:
    # Batch operations, so that a revision can alter a table SQLite cannot ALTER.
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_on(url: str) -> None:
    from ceptoar.store.engine import create_engine, dispose

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await dispose(engine)


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url is None:
        from ceptoar.config import Settings

        url = Settings().db_url
    asyncio.run(_run_on(url))


if context.is_offline_mode():
    raise SystemExit("ceptoar's migrations run against a database, not as SQL scripts (no --sql)")
_main()
