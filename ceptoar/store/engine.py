"""Opening the database: SQLite (WAL, one writer) by default, PostgreSQL by URL."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

__all__ = ["advisory_key", "create_engine", "dispose", "exclusive", "reading", "sqlite_file"]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control from the driver so `begin` below decides.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=0")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # IMMEDIATE takes the write lock up front: a transaction that reads and
    # then writes can otherwise fail at once with SQLITE_BUSY under a second
    # process. A read-only connection (see `reading`) needs no lock: WAL
    # lets it read beside the writer.
    if conn.get_execution_options().get(READ_ONLY, False):
        conn.exec_driver_sql("BEGIN")
        return
    # SQLite's own busy handler sleeps ever longer between tries (up to
    # 100 ms), so under steady contention from another process a writer
    # can starve for most of a second; try again every millisecond instead,
    # without blocking the event loop.
    deadline = time.monotonic() + _WRITE_LOCK_WAIT
    while True:
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        except OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        await_only(asyncio.sleep(0.001))


# How long a writer waits for another process's write lock before giving up.
_WRITE_LOCK_WAIT = 30.0


READ_ONLY = "ceptoar_read_only"


# SQLite: the engine of read-only connections beside each writer engine.
_READERS: weakref.WeakKeyDictionary[AsyncEngine, AsyncEngine] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for reads only.

    On SQLite it comes from the readers beside the process's one writer
    connection, and takes no lock: a status read or a dispatcher's lookup
    never queues behind a mailer's write.
    """
    async with _READERS.get(engine, engine).connect() as conn:
        await conn.execution_options(**{READ_ONLY: True})
        yield conn


def sqlite_file(url: str) -> Path | None:
    """The file of an SQLite database URL; None for another database or an in-memory one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def advisory_key(name: str) -> int:
    """The PostgreSQL advisory lock key of `name`'s work, the same in every ceptoar process."""
    return int.from_bytes(hashlib.sha256(f"ceptoar:{name}".encode()).digest()[:8], "big", signed=True)


@asynccontextmanager
async def exclusive(engine: AsyncEngine, name: str) -> AsyncIterator[bool]:
    """Whether this process is the one to do `name`'s work now; it stays so until the block ends.

    On PostgreSQL, a session advisory lock on a dedicated connection: of
    any number of hosts, one gets True, the others False at once (they do
    not wait). If the holder's connection dies, PostgreSQL lets go of the
    lock. On SQLite, True: one `ceptoar serve` uses a database file.
    """
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = advisory_key(name)
    async with engine.connect() as conn:
        mine = bool((await conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})).scalar())
        await conn.commit()  # the lock is the session's: no transaction stays open while the work runs
        try:
            yield mine
        finally:
            if mine:
                with suppress(OperationalError, OSError):
                    await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    await conn.commit()


def _owner_only(database: Path) -> None:
    """Create the SQLite file (and its directory) readable by its owner only, before SQLite opens it.

    SQLite gives its WAL and shared-memory files the database file's mode.
    An existing file keeps the mode it has.
    """
    database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with suppress(FileExistsError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def create_engine(url: str) -> AsyncEngine:
    """An async engine for `url`, with SQLite's directory created and pragmas set."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _owner_only(Path(parsed.database))
        # One connection per process: SQLite has one writer anyway, and a
        # single connection never waits on its own other connections.
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=120)
        readers = create_async_engine(url, pool_size=4, max_overflow=0, pool_timeout=120)
        for e in (engine, readers):
            event.listen(e.sync_engine, "connect", _sqlite_pragmas)
            event.listen(e.sync_engine, "begin", _sqlite_begin)
        # The writer waits for the write lock in `_sqlite_begin`, not in SQLite.
        event.listen(engine.sync_engine, "connect", _no_busy_wait)
        _READERS[engine] = readers
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


async def dispose(engine: AsyncEngine) -> None:
    """Close every connection of the engine (and of its readers)."""
    await engine.dispose()
    readers = _READERS.pop(engine, None)
    if readers is not None:
        await readers.dispose()
