"""The actuals' cells carry an integer project key (migration 0065, docs/performance.md
"perf-forecast12"): the refresh reads them with no join on the text ref and maps the keys to its
project codes. The read must equal the full derivation when projects appear in the actuals or in
the forecast's projects between refreshes (the codes shift, the keys do not), and on a database
whose actuals were built before 0065 (the migration keys them)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from psa_erp_sync.forecast import actuals
from psa_erp_sync.forecast.settings import load_forecast_settings
from tests.forecast.test_actuals_incremental import _assert_equal, _firm, _post, _time
from tests.migrated_before import database_before

pg = pytest.mark.integration


def _assert_keyed(conn: psycopg.Connection) -> None:
    """Every cell's key is its ref's; the keys are dense (only missing refs were added)."""
    wrong = conn.execute(
        "SELECT count(*) FROM forecast.actual_month a LEFT JOIN forecast.actual_project_key k"
        " ON k.project_key = a.project_key WHERE k.project_ref IS DISTINCT FROM a.project_ref"
    ).fetchone()
    assert wrong == (0,)
    count, top = (
        conn.execute("SELECT count(*), max(project_key) FROM forecast.actual_project_key").fetchone() or ()
    )
    assert count == top


def _new_projects(conn: psycopg.Connection) -> None:
    """A refresh's worth of changes: work on a project the forecast does not know yet (P8), then
    P0 and P8 become forecast projects (P0 sorts first: every code moves), P2 leaves them."""
    settings = load_forecast_settings()
    _time(conn, "t20", "P8", "2026-10-12", "1", "1.50")
    _post(conn, "t20", 15_000)
    _time(conn, "t21", "P0", "2026-11-04", "2", "2.00")
    _post(conn, "t21", 20_000)
    _assert_equal(conn, settings)
    _assert_keyed(conn)
    for ref in ("P0", "P8"):
        conn.execute(
            "INSERT INTO forecast.src_project (project_ref, practice, legal_entity, currency, billing_type,"
            " is_active) VALUES (%s, 'Strategy', 'LE-US1', 'USD', 'time_and_materials', true)",
            (ref,),
        )
    conn.execute("DELETE FROM forecast.src_project WHERE project_ref = 'P2'")
    _assert_equal(conn, settings)
    _time(conn, "t22", "P9", "2026-11-06", "1", "1.00")  # a cell for an existing key in a new month
    _post(conn, "t22", 10_000)
    _assert_equal(conn, settings)
    _assert_keyed(conn)


@pg
def test_new_projects_between_refreshes_read_as_the_full_derivation(clean_ods: str) -> None:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _firm(conn)
        assert actuals.catch_up(conn)["rebuilt"]
        _assert_keyed(conn)
        _new_projects(conn)
        keys = conn.execute("SELECT * FROM forecast.actual_project_key ORDER BY 1").fetchall()
        before = conn.execute("SELECT * FROM forecast.actual_month ORDER BY 1, 2, 3").fetchall()
        actuals.rebuild(conn)  # the registry stays: the same keys, the same cells
        assert conn.execute("SELECT * FROM forecast.actual_project_key ORDER BY 1").fetchall() == keys
        assert conn.execute("SELECT * FROM forecast.actual_month ORDER BY 1, 2, 3").fetchall() == before


@pytest.fixture
def db_before_0065(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database migrated up to (not including) 0065."""
    with database_before(pg_dsn, monkeypatch, 65) as dsn:
        yield dsn


def _build_as_before_0065(conn: psycopg.Connection) -> None:
    """The actuals as the catch-up built them before 0065 (cells without a key)."""
    conn.execute(
        f"INSERT INTO forecast.actual_cost_rate (user_ref, fingerprint) {actuals._RATE_FINGERPRINTS}"
    )
    conn.execute(
        f"INSERT INTO forecast.actual_source ({actuals._SOURCE_COLUMNS}) {actuals._derived(only_changed=False)}"
    )
    conn.execute(
        f"""
        INSERT INTO forecast.actual_month ({actuals._CELL_COLUMNS})
        SELECT project_ref, month, currency, sum(revenue_minor), sum(revenue_n), sum(cost_centi), sum(cost_n)
        FROM ({actuals._cells("forecast.actual_source", 1)}) c (project_ref, month, currency, revenue_minor,
              revenue_n, cost_centi, cost_n)
        GROUP BY 1, 2, 3
        """
    )
    conn.execute("INSERT INTO forecast.actual_state (built_at, caught_up_at) VALUES (now(), now())")
    conn.execute("DELETE FROM forecast.actual_change")


@pg
def test_actuals_built_before_0065_are_keyed_by_the_migration(db_before_0065: str) -> None:
    from psa_erp_sync.ods import migrate

    with psycopg.connect(db_before_0065, autocommit=True) as conn:
        _firm(conn)
        _build_as_before_0065(conn)
        cells = conn.execute("SELECT * FROM forecast.actual_month ORDER BY 1, 2, 3").fetchall()
        assert len(cells) == 12
    assert "0065_forecast_actual_project_key.sql" in migrate.apply(db_before_0065)
    with psycopg.connect(db_before_0065, autocommit=True) as conn:
        _assert_keyed(conn)
        after = conn.execute(f"SELECT {actuals._CELL_COLUMNS} FROM forecast.actual_month ORDER BY 1, 2, 3")
        assert after.fetchall() == cells
        assert actuals.catch_up(conn) == {"rebuilt": False, "queued": 0, "rate_sources": 0, "rederived": 0}
        _assert_equal(conn, load_forecast_settings())
        _new_projects(conn)
