"""ODS migrations: applied once, forward-only, every table documented, money never floating point."""

from __future__ import annotations

import psycopg
import pytest

from psa_erp_sync.ods import migrate


def test_applying_twice_changes_nothing(pg_dsn: str) -> None:
    assert migrate.apply(pg_dsn) == []


def test_an_edited_applied_migration_is_refused(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE ods_meta.schema_migration SET checksum = 'x' WHERE version = 1")
        try:
            with pytest.raises(migrate.MigrationError, match="add a new migration"):
                migrate.apply(pg_dsn)
        finally:
            conn.execute(
                "UPDATE ods_meta.schema_migration SET checksum = %s WHERE version = 1",
                (migrate.discover()[0].checksum,),
            )


def test_versions_are_unique_and_ordered() -> None:
    versions = [m.version for m in migrate.discover()]
    assert versions == sorted(set(versions))
    assert versions[0] == 1


def test_every_schema_and_table_has_a_purpose_comment(pg_conn: psycopg.Connection) -> None:
    rows = pg_conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND n.nspname IN ('staging','canonical','ledger','inbox','exceptions','forecast','audit','revenue')"
        " AND obj_description(c.oid, 'pg_class') IS NULL"
    ).fetchall()
    assert rows == []
    schemas = {
        r[0]
        for r in pg_conn.execute(
            "SELECT nspname FROM pg_namespace WHERE obj_description(oid, 'pg_namespace') IS NOT NULL"
        )
    }
    assert {
        "staging",
        "canonical",
        "ledger",
        "inbox",
        "exceptions",
        "forecast",
        "audit",
        "revenue",
    } <= schemas


def test_no_floating_point_columns(pg_conn: psycopg.Connection) -> None:
    rows = pg_conn.execute(
        "SELECT table_schema, table_name, column_name FROM information_schema.columns"
        " WHERE table_schema IN ('staging','canonical','ledger','inbox','exceptions','forecast','audit','revenue')"
        " AND data_type IN ('real', 'double precision', 'money')"
    ).fetchall()
    assert rows == []
