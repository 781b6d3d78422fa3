"""Schema migrations: a database from any earlier schema is brought to the head revision, keeping its rows,
and has exactly the shape of a new one; commands other than `db upgrade` and `serve` refuse an old one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection

from ceptoar.registry import RegistryRow
from ceptoar.store import SchemaOutOfDate, Store
from ceptoar.store.migrations import head
from tests.conftest import _create_pg_database, _drop_pg_database, _pg_url
from tests.harness import run_cli, subset

# Schema 1, as the first release created it (SQLite).
SCHEMA_1 = [
    "CREATE TABLE subscribers (code VARCHAR(6) PRIMARY KEY, name VARCHAR(200) NOT NULL,"
    " prefecture VARCHAR(2) NOT NULL, active BOOLEAN NOT NULL, updated_at DATETIME NOT NULL)",
    "CREATE TABLE addresses (id INTEGER PRIMARY KEY AUTOINCREMENT, subscriber_code VARCHAR(6) NOT NULL"
    " REFERENCES subscribers(code), email VARCHAR(254) NOT NULL UNIQUE, role VARCHAR(16) NOT NULL,"
    " language VARCHAR(2) NOT NULL, active BOOLEAN NOT NULL, updated_at DATETIME NOT NULL)",
    "CREATE TABLE notices (id INTEGER PRIMARY KEY AUTOINCREMENT, source VARCHAR(64) NOT NULL,"
    " source_id VARCHAR(128) NOT NULL, format VARCHAR(16) NOT NULL, sent_at DATETIME NOT NULL,"
    " received_at DATETIME NOT NULL, payload TEXT NOT NULL, UNIQUE (source, source_id))",
    "CREATE TABLE alerts (id VARCHAR(32) PRIMARY KEY, notice_id INTEGER NOT NULL UNIQUE REFERENCES notices(id),"
    " source VARCHAR(64) NOT NULL, source_id VARCHAR(128) NOT NULL, msg_type VARCHAR(16) NOT NULL,"
    " severity VARCHAR(16) NOT NULL, severity_rules JSON NOT NULL, tlp VARCHAR(16) NOT NULL,"
    " title VARCHAR(300) NOT NULL, notice JSON NOT NULL, created_at DATETIME NOT NULL, jobs_published_at DATETIME)",
    "CREATE TABLE deliveries (id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id VARCHAR(32) NOT NULL"
    " REFERENCES alerts(id), address_id INTEGER NOT NULL REFERENCES addresses(id), email VARCHAR(254) NOT NULL,"
    " state VARCHAR(16) NOT NULL, attempts INTEGER NOT NULL, message_id VARCHAR(255) NOT NULL UNIQUE,"
    " last_code INTEGER, last_reply TEXT, lease_until DATETIME, created_at DATETIME NOT NULL,"
    " updated_at DATETIME NOT NULL, sent_at DATETIME, UNIQUE (alert_id, address_id))",
    "CREATE TABLE delivery_events (id INTEGER PRIMARY KEY AUTOINCREMENT, delivery_id INTEGER NOT NULL"
    " REFERENCES deliveries(id), at DATETIME NOT NULL, state VARCHAR(16) NOT NULL, attempt INTEGER NOT NULL,"
    " smtp_code INTEGER, smtp_reply TEXT)",
    "INSERT INTO subscribers VALUES ('131016', '東京都千代田区', '13', 1, '2026-11-01 00:00:00')",
    "INSERT INTO addresses VALUES (1, '131016', 'primary@131016.lg.example', 'primary', 'ja', 1,"
    " '2026-11-01 00:00:00')",
]


async def _schema_1_database(path: Path) -> str:
    """The URL of a SQLite database as the first release made it."""
    from ceptoar.store.engine import create_engine, dispose

    url = f"sqlite+aiosqlite:///{path}"
    engine = create_engine(url)
    async with engine.begin() as conn:
        for statement in SCHEMA_1:
            await conn.execute(text(statement))
    await dispose(engine)
    return url


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
    """Each table's columns, indexes (name, columns, unique) and unique constraints."""
    inspector = inspect(conn)
    return {
        table: (
            sorted(c["name"] for c in inspector.get_columns(table)),
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


async def test_a_database_migrated_from_schema_1_has_exactly_the_shape_of_a_new_one(tmp_path: Path) -> None:
    old = await _schema_1_database(tmp_path / "old.db")
    migrated, new = await _shape_of(old), await _shape_of(f"sqlite+aiosqlite:///{tmp_path / 'new.db'}")
    assert migrated == new
    assert ("ix_alerts_thread_id", ("thread_id",), False) in new["alerts"][1]  # type: ignore[index]


@pytest.mark.postgres
async def test_a_postgresql_database_from_schema_4_has_exactly_the_shape_of_a_new_one(pg_url: str) -> None:
    async with await Store.open(pg_url) as store, store.engine.begin() as conn:  # as schema 4 left it
        for statement in (
            "ALTER TABLE alerts DROP COLUMN pending",
            "ALTER TABLE audit DROP COLUMN os_user",
            "ALTER TABLE audit DROP COLUMN host",
            "DROP INDEX ix_alerts_thread_id",
            "DROP INDEX ix_audit_notice_id",
        ):
            await conn.execute(text(statement))
        await _before_alembic(conn, version=4)
    fresh = await _create_pg_database()
    try:
        new = await _shape_of(_pg_url(fresh))
    finally:
        await _drop_pg_database(fresh)
    assert await _shape_of(pg_url) == new
    assert ("ix_alerts_thread_id", ("thread_id",), False) in new["alerts"][1]  # type: ignore[index]


async def _before_alembic(conn: AsyncConnection, *, version: int) -> None:
    """Make a database look as ceptoar left it before Alembic, at schema `version`."""
    await conn.execute(text("DROP TABLE alembic_version"))
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
