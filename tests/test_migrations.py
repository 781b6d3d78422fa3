"""A database made by the first schema is brought to the latest, keeping its rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from ceptoar.registry import RegistryRow
from ceptoar.store import Store
from ceptoar.store.migrations import LATEST
from tests.harness import subset

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


async def test_schema_1_database_is_migrated_in_place(
    tmp_path: Path, registry_rows: list[RegistryRow]
) -> None:
    from ceptoar.store.engine import create_engine, dispose

    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    async with engine.begin() as conn:
        for statement in SCHEMA_1:
            await conn.execute(text(statement))
    await dispose(engine)

    async with await Store.open(url) as store:
        async with store.engine.connect() as conn:
            version = (await conn.execute(text("SELECT max(version) FROM schema_version"))).scalar()
            columns = await conn.run_sync(lambda c: {x["name"] for x in inspect(c).get_columns("addresses")})
            alert_columns = await conn.run_sync(
                lambda c: {x["name"] for x in inspect(c).get_columns("alerts")}
            )
        assert version == LATEST
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
            await conn.execute(text("UPDATE schema_version SET version = 4 WHERE version = 5"))
    async with await Store.open(pg_url) as store:
        async with store.engine.connect() as conn:
            version = (await conn.execute(text("SELECT max(version) FROM schema_version"))).scalar()
            columns = await conn.run_sync(lambda c: {x["name"] for x in inspect(c).get_columns("alerts")})
        assert version == LATEST == 5 and "pending" in columns
        assert (await store.subscribers.counts()).addresses == 2
