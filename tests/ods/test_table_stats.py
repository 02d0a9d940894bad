"""ods/table_stats.py: the pipeline refreshes missing or stale planner statistics itself, on its
own connection, without ever blocking or failing a run."""

from __future__ import annotations

import time

import psycopg
import pytest

from psa_erp_sync.ods import table_stats

TABLE = "staging.stats_probe"


@pytest.fixture
def probe(pg_dsn: str):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, v text)")
        # a table the server would not analyse on its own in this test's time
        conn.execute(f"ALTER TABLE {TABLE} SET (autovacuum_enabled = off)")
    yield pg_dsn
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")


def _load(dsn: str, first: int, n: int) -> None:
    with psycopg.connect(dsn) as conn:  # committed and the backend gone: its counts are flushed
        conn.execute(
            f"INSERT INTO {TABLE} SELECT g, 'x' FROM generate_series(%s::bigint, %s::bigint) g",
            (first, first + n - 1),
        )


def _until_stale(conn: psycopg.Connection, expected: list[str]) -> list[str]:
    deadline = time.monotonic() + 15
    while True:  # the loading backend's counts reach the shared statistics within a moment
        found = table_stats.stale(conn, [TABLE])
        if found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _reltuples(conn: psycopg.Connection) -> float:
    return float(
        conn.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (TABLE,)).fetchone()[0]
    )


def test_a_never_analysed_table_is_analysed_once(probe: str) -> None:
    _load(probe, 1, 5000)
    with psycopg.connect(probe, autocommit=True) as conn:
        assert _reltuples(conn) < 0  # never analysed: the planner guesses
        assert table_stats.stale(conn, [TABLE]) == [TABLE]
        done = table_stats.refresh(conn, [TABLE])
        assert done.analysed == [TABLE] and done.busy == []
        assert _reltuples(conn) == 5000
        # fresh statistics: nothing to do, nothing done
        assert table_stats.refresh(conn, [TABLE]).analysed == []


def test_a_bulk_load_over_the_threshold_makes_them_stale_again(probe: str) -> None:
    _load(probe, 1, 5000)
    with psycopg.connect(probe, autocommit=True) as conn:
        table_stats.refresh(conn, [TABLE])
        _load(probe, 5001, 200)  # 200 <= 50 + 10 % of 5000: still fresh
        assert _until_stale(conn, []) == []
        _load(probe, 5201, 45000)  # a month's load on top
        assert _until_stale(conn, [TABLE]) == [TABLE]
        assert table_stats.refresh(conn, [TABLE]).analysed == [TABLE]
        assert _reltuples(conn) == 50200


def test_a_table_being_analysed_elsewhere_is_skipped_not_waited_for(probe: str) -> None:
    _load(probe, 1, 1000)
    with psycopg.connect(probe) as holder, psycopg.connect(probe, autocommit=True) as conn:
        holder.execute(f"LOCK TABLE {TABLE} IN SHARE UPDATE EXCLUSIVE MODE")  # what ANALYZE takes
        started = time.monotonic()
        done = table_stats.refresh(conn, [TABLE], lock_timeout_ms=300)
        assert done.busy == [TABLE] and done.analysed == []
        assert time.monotonic() - started < 10
        holder.rollback()


def test_the_callers_transaction_is_not_touched_and_errors_do_not_fail_the_run(probe: str) -> None:
    _load(probe, 1, 1000)
    with psycopg.connect(probe) as conn:
        conn.execute(f"INSERT INTO {TABLE} VALUES (-1, 'uncommitted')")
        done = table_stats.refresh(conn, [TABLE])
        assert done.analysed == [TABLE]
        # the ANALYZE ran elsewhere: no lock of it in the caller's transaction, which goes on
        held = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND mode = 'ShareUpdateExclusiveLock'"
        ).fetchone()[0]
        assert held == 0
        assert table_stats.refresh(conn, ["staging.no_such_table"]).analysed == []  # logged, not raised
        assert conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == 1001
        conn.rollback()
