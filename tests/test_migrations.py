"""Schema migrations: a database from any earlier schema is brought to the head revision, keeping its rows,
and has exactly the shape of a new one; commands other than `db upgrade` and `serve` refuse an old one."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection

from ceptoar.registry import RegistryRow
from ceptoar.store import SchemaOutOfDate, Store
from ceptoar.store.baseline import schema_12
from ceptoar.store.migrations import HEAD, head, script_head
from ceptoar.store.tables import metadata
from tests.conftest import _create_pg_database, _drop_pg_database, _pg_url
from tests.harness import run_cli, subset

SCHEMAS = Path(__file__).parent / "data" / "schemas"


async def _schema_1_database(path: Path) -> str:
    """The URL of a SQLite database as the first release made it, with an organisation and its address."""
    with sqlite3.connect(path) as conn:  # tests/data/schemas/make.sh
        conn.executescript((SCHEMAS / "sqlite-v1.sql").read_text())
        conn.execute("INSERT INTO subscribers VALUES ('131016', '東京都千代田区', '13', 1, '2026-11-01 00:00:00')")
        conn.execute(
            "INSERT INTO addresses VALUES (1, '131016', 'primary@131016.lg.example', 'primary', 'ja', 1,"
            " '2026-11-01 00:00:00')"
        )
    return f"sqlite+aiosqlite:///{path}"


async def test_schema_1_database_is_migrated_in_place(
    tmp_path: Path, registry_rows: list[RegistryRow]
) -> None:
    url = await _schema_1_database(tmp_path / "old.db")
    async with await Store.open(url, upgrade=True) as store:
        async with store.engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            columns = await conn.run_sync(lambda c: {x["name"] for x in inspect(c).get_columns("addresses")})
            alert_columns = await conn.run_sync(
                lambda c: {x["name"] for x in inspect(c).get_columns("alerts")}
            )
        assert version == head() and "schema_version" not in tables
        assert {"min_severity", "categories", "prefectures", "wants_tests", "contact"} <= columns
        assert {"state", "thread_id", "expires_at", "pending"} <= alert_columns
        (kept,) = await store.subscribers.candidates()
        assert (kept.email, kept.min_severity, kept.categories, kept.wants_tests) == (
            "primary@131016.lg.example",
            "low",
            (),
            False,
        )
        # And it works as a current database.
        await store.subscribers.import_rows(subset(registry_rows, 2))
        assert (await store.subscribers.counts()).addresses == 5

    async with await Store.open(url) as again:  # opening twice changes nothing
        assert (await again.subscribers.counts()).addresses == 5


async def test_subscriptions_round_trip_through_the_store(store: Store) -> None:
    rows = [
        RegistryRow(
            "131016",
            "東京都千代田区",
            "soc@131016.lg.example",
            "security",
            "en",
            "high",
            ("attack", "malware"),
            ("13", "14"),
            True,
            True,
        ),
        RegistryRow("131016", "東京都千代田区", "info@131016.lg.example", "backup"),
    ]
    await store.subscribers.import_rows(rows)
    assert await store.subscribers.export_rows() == rows
    changed = [
        rows[0],
        RegistryRow("131016", "東京都千代田区", "info@131016.lg.example", "backup", min_severity="medium"),
    ]
    result = await store.subscribers.import_rows(changed)
    assert result.addresses_updated == 1
    assert (await store.subscribers.export_rows())[1].min_severity == "medium"


@pytest.mark.postgres
async def test_a_schema_4_postgresql_database_gets_alerts_pending(
    pg_url: str, registry_rows: list[RegistryRow]
) -> None:
    async with await Store.open(pg_url) as store:
        await store.subscribers.import_rows(subset(registry_rows, 1))
        async with store.engine.begin() as conn:  # as schema 4 left it
            await conn.execute(text("ALTER TABLE alerts DROP COLUMN pending"))
            await _before_alembic(conn, version=4)
    with pytest.raises(SchemaOutOfDate, match=r"schema version 4, from before Alembic .* `ceptoar db upgrade`"):
        await Store.open(pg_url)
    async with await Store.open(pg_url, upgrade=True) as store:
        async with store.engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            columns = await conn.run_sync(lambda c: {x["name"] for x in inspect(c).get_columns("alerts")})
        assert version == head() and "pending" in columns
        assert (await store.subscribers.counts()).addresses == 2


def _shape(conn: Connection) -> dict[str, object]:
    """Each table's columns (type, null, default), primary key, foreign keys, indexes and unique constraints."""
    inspector = inspect(conn)
    return {
        table: (
            sorted(
                (c["name"], str(c["type"]), c["nullable"], c["default"]) for c in inspector.get_columns(table)
            ),
            sorted(inspector.get_pk_constraint(table)["constrained_columns"]),
            sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in inspector.get_foreign_keys(table)
            ),
            sorted((ix["name"], tuple(ix["column_names"]), bool(ix["unique"])) for ix in inspector.get_indexes(table)),
            _uniques(conn, table),
        )
        for table in sorted(inspector.get_table_names())
    }


def _uniques(conn: Connection, table: str) -> list[tuple[str, ...]]:
    """The column sets a table's unique constraints cover (SQLite: a column's own UNIQUE too)."""
    if conn.dialect.name != "sqlite":
        return sorted(tuple(u["column_names"]) for u in inspect(conn).get_unique_constraints(table))
    found = []
    for _, name, unique, origin, _ in conn.exec_driver_sql(f"PRAGMA index_list('{table}')").all():
        if unique and origin == "u":
            found.append(tuple(r[2] for r in conn.exec_driver_sql(f"PRAGMA index_info('{name}')").all()))
    return sorted(found)


async def _shape_of(url: str) -> dict[str, object]:
    async with await Store.open(url, upgrade=True) as store, store.engine.connect() as conn:
        return await conn.run_sync(_shape)


async def _before_alembic(conn: AsyncConnection, *, version: int) -> None:
    """Make a database look as ceptoar left it before Alembic, at schema `version`: without Alembic's
    table, with a schema_version table, and without the tables, columns and indexes later revisions made."""
    await conn.execute(text("DROP TABLE alembic_version"))
    baseline = schema_12().tables
    for table in reversed(metadata.sorted_tables):
        if table.name not in baseline:
            await conn.execute(text(f"DROP TABLE {table.name}"))
            continue
        for column in table.columns:
            if column.name not in baseline[table.name].columns:
                await conn.execute(text(f"ALTER TABLE {table.name} DROP COLUMN {column.name}"))
        kept = {i.name for i in baseline[table.name].indexes}
        for index in table.indexes:
            if index.name not in kept:
                await conn.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
    await conn.execute(text("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)"))
    await conn.execute(text("INSERT INTO schema_version VALUES (:v, CURRENT_TIMESTAMP)"), {"v": version})


async def test_a_schema_12_database_is_stamped_at_the_baseline_and_keeps_its_rows(
    db_url: str, registry_rows: list[RegistryRow]
) -> None:
    async with await Store.open(db_url) as store:
        await store.subscribers.import_rows(subset(registry_rows, 3))
        async with store.engine.begin() as conn:
            await _before_alembic(conn, version=12)
    async with await Store.open(db_url, upgrade=True) as store:
        async with store.engine.connect() as conn:
            assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar() == head()
            assert not await conn.run_sync(lambda c: inspect(c).has_table("schema_version"))
        assert (await store.subscribers.counts()).addresses == 6


async def test_a_command_refuses_an_old_database_and_names_the_upgrade(tmp_path: Path) -> None:
    url = await _schema_1_database(tmp_path / "old.db")
    env = {"CEPTOAR_DATABASE_URL": url, "CEPTOAR_VAR_DIR": str(tmp_path)}
    refused = run_cli("subscribers", "count", env=env)
    assert refused.returncode == 5
    assert "schema version 1, from before Alembic" in refused.stderr and "`ceptoar db upgrade`" in refused.stderr
    current = run_cli("db", "current", env=env)
    assert current.returncode == 5 and "database: schema version 1, from before Alembic" in current.stdout
    upgraded = run_cli("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"at revision {head()} (was schema version 1, from before Alembic)"
    assert run_cli("subscribers", "count", env=env).returncode == 0
    assert run_cli("db", "current", env=env).stdout.splitlines()[0] == f"database: revision {head()}"
    no_migrate = run_cli("serve", "--no-migrate", env={**env, "CEPTOAR_DATABASE_URL": await _schema_1_database(tmp_path / "b.db")})
    assert no_migrate.returncode == 5 and "`ceptoar db upgrade`" in no_migrate.stderr


@pytest.mark.postgres
async def test_hosts_that_start_together_upgrade_once(pg_url: str, registry_rows: list[RegistryRow]) -> None:
    async with await Store.open(pg_url) as store:
        await store.subscribers.import_rows(subset(registry_rows, 2))
        async with store.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE addresses DROP COLUMN charset"))
            await _before_alembic(conn, version=11)
    opened = await asyncio.gather(*(Store.open(pg_url, upgrade=True) for _ in range(4)))
    for store in opened:
        await store.close()
    async with await Store.open(pg_url) as store:
        assert (await store.subscribers.counts()).addresses == 4
        assert {r.charset for r in await store.subscribers.export_rows()} == {"utf-8"}


@pytest.mark.parametrize("version", range(1, 13))
async def test_a_sqlite_database_of_each_earlier_schema_gets_exactly_the_shape_of_a_new_one(
    tmp_path: Path, version: int
) -> None:
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:  # as that release made a new database (tests/data/schemas/make.sh)
        conn.executescript((SCHEMAS / f"sqlite-v{version}.sql").read_text())
    new = await _shape_of(f"sqlite+aiosqlite:///{tmp_path / 'new.db'}")
    assert await _shape_of(f"sqlite+aiosqlite:///{old}") == new


@pytest.mark.postgres
@pytest.mark.parametrize("version", range(1, 13))
async def test_a_postgresql_database_of_each_earlier_schema_gets_exactly_the_shape_of_a_new_one(
    pg_url: str, version: int
) -> None:
    conn = await asyncpg.connect(pg_url.replace("postgresql+asyncpg:", "postgresql:", 1))
    try:
        await conn.execute((SCHEMAS / f"postgresql-v{version}.sql").read_text())
    finally:
        await conn.close()
    fresh = await _create_pg_database()
    try:
        new = await _shape_of(_pg_url(fresh))
    finally:
        await _drop_pg_database(fresh)
    assert await _shape_of(pg_url) == new


def test_the_head_ceptoar_names_is_the_newest_revision_script() -> None:
    assert HEAD == head() == script_head()
