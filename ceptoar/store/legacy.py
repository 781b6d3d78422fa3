"""Databases from before Alembic: schema versions 1 to 12, brought to 12 by the steps they had.

Until Alembic, a `schema_version` table numbered the schema. Version 1 is
the first cut (subscribers, addresses, notices, alerts, deliveries,
delivery_events). Version 2 adds subscriptions to addresses, the
lifecycle to alerts and threading headers to deliveries. Version 3 adds the
HTTP feed's credentials (feeds) and what it accepted (receipts). Version 4
adds the operators' audit log. Version 5 adds the audience an alert still
has to write as deliveries (alerts.pending). Version 6 adds the operator's
account and host to the audit log, and creates the indexes that columns
added by earlier steps lacked. Version 7 adds why a notice the HTTP
endpoint accepted was refused later (receipts.reason, receipts.field).
Version 8 records who released a held alert (alerts.released_by,
alerts.released_at). Version 9 adds what came back to the deliveries'
return paths (returned), version 10 what organisations answered
(answers), version 11 escalations and what each delivery's mail is for
(deliveries.purpose), version 12 each address's charset
(addresses.charset).

`to_schema_12` runs the steps a database still lacks and drops
`schema_version`: from there the database is at Alembic's baseline
revision (`ceptoar.store.baseline`), and `ceptoar.store.migrations`
stamps it so. The steps are frozen: tables they create are schema 12's.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, MetaData, inspect, text
from sqlalchemy.schema import CreateTable

from ceptoar.store.baseline import schema_12

__all__ = ["LAST", "schema_version", "to_schema_12"]


def _add_columns(conn: Connection, table: str, columns: list[tuple[str, str, str | None]]) -> None:
    """ALTER TABLE ADD COLUMN for each (name, type, default SQL) missing from `table`."""
    present = {c["name"] for c in inspect(conn).get_columns(table)}
    boolean_false = "false" if conn.dialect.name == "postgresql" else "0"
    for name, sql_type, default in columns:
        if name in present:
            continue
        if default == "FALSE":
            default = boolean_false
        tail = f" NOT NULL DEFAULT {default}" if default is not None else ""
        quoted = conn.dialect.identifier_preparer.quote(name)
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {quoted} {sql_type}{tail}"))


def _v2(conn: Connection) -> None:
    _add_columns(
        conn,
        "addresses",
        [
            ("min_severity", "VARCHAR(16)", "'low'"),
            ("categories", "JSON", "'[]'"),
            ("prefectures", "JSON", "'[]'"),
            ("wants_tests", "BOOLEAN", "FALSE"),
            ("contact", "BOOLEAN", "FALSE"),
        ],
    )
    _add_columns(
        conn,
        "alerts",
        [
            ("state", "VARCHAR(16)", "'active'"),
            ("held_reason", "TEXT", None),
            ("thread_id", "VARCHAR(32)", None),
            ("parent_id", "VARCHAR(32)", None),
            ("status", "VARCHAR(16)", "'actual'"),
            (
                "expires_at",
                "TIMESTAMP WITH TIME ZONE" if conn.dialect.name == "postgresql" else "DATETIME",
                None,
            ),
        ],
    )
    conn.execute(text("UPDATE alerts SET thread_id = id WHERE thread_id IS NULL"))
    _add_columns(
        conn,
        "deliveries",
        [
            ("in_reply_to", "VARCHAR(255)", None),
            ("references", "TEXT", None),
        ],
    )


def _v3(conn: Connection) -> None:
    # New tables only (3: feeds and receipts; 4: audit; 9: returned; 10: answers; 11: escalations), as
    # schema 12 has them: the first of these steps creates them all.
    schema_12().create_all(conn)


def _v5(conn: Connection) -> None:
    _add_columns(conn, "alerts", [("pending", "JSON", None)])


def _create_missing_indexes(conn: Connection) -> None:
    """Create every index the tables declare that the database lacks (columns added by ALTER get none)."""
    inspector = inspect(conn)
    for table in schema_12().sorted_tables:
        if not inspector.has_table(table.name):
            continue  # made by a later step, with its indexes
        present = {ix["name"] for ix in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in present:
                index.create(conn)


def _v6(conn: Connection) -> None:
    _add_columns(conn, "audit", [("os_user", "VARCHAR(64)", None), ("host", "VARCHAR(255)", None)])
    _create_missing_indexes(conn)


def _v7(conn: Connection) -> None:
    _add_columns(conn, "receipts", [("reason", "TEXT", None), ("field", "VARCHAR(200)", None)])


def _v8(conn: Connection) -> None:
    timestamp = "TIMESTAMP WITH TIME ZONE" if conn.dialect.name == "postgresql" else "DATETIME"
    _add_columns(conn, "alerts", [("released_by", "VARCHAR(128)", None), ("released_at", timestamp, None)])


def _v11(conn: Connection) -> None:
    """escalations, deliveries.purpose, and one row per (alert, address, purpose), not (alert, address)."""
    _v3(conn)
    _add_columns(conn, "deliveries", [("purpose", "VARCHAR(16)", "'alert'")])
    olds = [
        u["name"]
        for u in inspect(conn).get_unique_constraints("deliveries")
        if sorted(u["column_names"]) == ["address_id", "alert_id"]
    ]
    if not olds:  # made by a release that already had it
        return
    if conn.dialect.name == "postgresql":
        old = olds[0]
        conn.execute(text(f'ALTER TABLE deliveries DROP CONSTRAINT "{old}"'))
        conn.execute(
            text(
                "ALTER TABLE deliveries ADD CONSTRAINT uq_deliveries_alert_address_purpose "
                "UNIQUE (alert_id, address_id, purpose)"
            )
        )
        return
    # SQLite cannot drop a table constraint: the table is built anew and its rows copied, the
    # references to it checked at commit (same ids, so they hold).
    conn.execute(text("PRAGMA defer_foreign_keys = ON"))
    frozen = schema_12()
    deliveries = frozen.tables["deliveries"]
    columns = ", ".join(conn.dialect.identifier_preparer.quote(c.name) for c in deliveries.columns)
    beside = MetaData()  # the tables it refers to, so that its foreign keys resolve
    for table in frozen.sorted_tables:
        if table is not deliveries:
            table.to_metadata(beside)
    conn.execute(CreateTable(deliveries.to_metadata(beside, name="deliveries_v11")))
    conn.execute(text(f"INSERT INTO deliveries_v11 ({columns}) SELECT {columns} FROM deliveries"))
    conn.execute(text("DROP TABLE deliveries"))
    conn.execute(text("ALTER TABLE deliveries_v11 RENAME TO deliveries"))
    for index in deliveries.indexes:
        index.create(conn)


def _v12(conn: Connection) -> None:
    _add_columns(conn, "addresses", [("charset", "VARCHAR(16)", "'utf-8'")])


_STEPS: dict[int, Callable[[Connection], None]] = {
    2: _v2,
    3: _v3,
    4: _v3,
    5: _v5,
    6: _v6,
    7: _v7,
    8: _v8,
    9: _v3,
    10: _v3,
    11: _v11,
    12: _v12,
}
LAST = max(_STEPS)


def schema_version(conn: Connection) -> int | None:
    """The schema version of a database from before Alembic; None for any other database.

    Its `schema_version` table says; tables from before that table are version 1.
    """
    inspector = inspect(conn)
    if inspector.has_table("alembic_version"):
        return None
    if inspector.has_table("schema_version"):
        return int(conn.execute(text("SELECT max(version) FROM schema_version")).scalar() or 1)
    return 1 if inspector.has_table("alerts") else None


def to_schema_12(conn: Connection) -> int:
    """Bring a database from before Alembic to schema 12 and drop `schema_version`; the version it had."""
    version = schema_version(conn)
    if version is None:
        raise ValueError("not a database from before Alembic")
    for step in range(version + 1, LAST + 1):
        _STEPS[step](conn)
    conn.execute(text("DROP TABLE IF EXISTS schema_version"))
    return version
