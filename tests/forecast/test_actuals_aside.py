"""The actuals' whole months read on another connection while the catch-up runs
(``inputs._caught_up_cells`` with a read aside, perf-forecast8): the cells are exactly those the
refresh's connection reads after the catch-up, whatever the catch-up changed (cells moved,
appearing, vanishing; unknown projects; cost currencies without an FX rate), and the read
really runs beside the catch-up.

Real PostgreSQL; the firm and its changes are ``test_actuals_incremental``'s.
"""

from __future__ import annotations

import threading
from datetime import date
from typing import Any

import psycopg
import pytest

from psa_erp_sync.forecast import actuals, inputs
from psa_erp_sync.forecast.settings import load_forecast_settings
from tests.forecast.test_actuals_incremental import _expense, _firm, _post, _projects, _time, full_derivation

AS_OFS = (date(2026, 10, 31), date(2026, 11, 9), date(2027, 1, 31))


def _cell_rows(cells: dict[str, Any]) -> list[tuple[str, str, int, int]]:
    """Decoded cells as sorted (ref, currency, month, amount): what they mean, whatever the codes."""
    refs, currencies = cells["refs"], cells["currencies"]
    rows = zip(
        cells["project_code"].tolist(),
        cells["currency_code"].tolist(),
        cells["month"].tolist(),
        cells["amount"].tolist(),
        strict=True,
    )
    return sorted((refs[p], currencies[c], m, a) for p, c, m, a in rows)


def _check(conn: psycopg.Connection, as_of: date) -> int:
    """Catch up with the whole months read aside; the cells equal the read in turn after it and
    the actuals the full derivation's. Returns the records the catch-up re-derived."""
    import pandas.testing as pdt

    settings = load_forecast_settings()
    currencies = ["", *settings.fx_rates]
    queued = conn.execute("SELECT count(*) FROM forecast.actual_change").fetchone()
    aside = inputs._reads_aside(conn)
    assert aside is not None
    with conn.transaction():
        beside = inputs._caught_up_cells(conn, as_of, settings, aside)
        in_turn = inputs._actual_cells(conn, as_of, currencies)
    assert _cell_rows(beside) == _cell_rows(in_turn)
    projects = _projects(conn)
    got = inputs._actuals_frame(beside, projects, settings)
    pdt.assert_frame_equal(
        got, full_derivation(conn, as_of, projects, settings), obj=f"actuals as of {as_of}"
    )
    conn.commit()
    return int(queued[0]) if queued else 0


def test_the_whole_months_read_aside_equal_the_read_in_turn(clean_ods: str) -> None:
    with psycopg.connect(clean_ods) as conn:
        _firm(conn)
        # A person whose cost currency has no FX rate, on the unknown project P9: an odd currency.
        conn.execute(
            "INSERT INTO forecast.src_person (user_ref, legal_entity, currency, is_active,"
            " weekly_capacity_seconds, cost_rate_minor) VALUES ('4', 'LE-US1', 'XTS', true, 144000, 1000)"
        )
        _time(conn, "t20", "P9", "2026-09-14", "4", "1.00")
        # Another unknown project in P9's month: its cells' keys are P9's (code -1); never touched.
        _time(conn, "t23", "P7", "2026-10-09", "2", "1.00")
        _post(conn, "t23", 9_000)
        conn.commit()
        assert _check(conn, AS_OFS[1]) > 0  # the first catch-up rebuilds: read in turn
        assert _check(conn, AS_OFS[0]) == 0  # nothing queued
        # Cells changed, moved, appearing and vanishing; unknown projects and the odd currency too.
        _time(conn, "t1", "P1", "2026-09-10", "1", "3.00")
        _post(conn, "t1", 30_000, action="adjust")
        _post(conn, "t5", -10_000, action="reverse")
        conn.execute("UPDATE canonical.time_entry SET is_deleted = true WHERE source_id = 't4'")
        _time(conn, "t7", "P2", "2026-11-01", "2", "2.00")  # leaves P9 (unknown) for P2
        _time(conn, "t20", "P9", "2026-08-03", "4", "2.00")  # the odd currency's cell moves
        _time(conn, "t21", "P8", "2026-10-05", "4", "1.00")  # a new unknown project, odd currency
        _post(conn, "t21", 5_000)
        _expense(conn, "e3", "P3", "2026-08-20", 1_200)
        _post(conn, "e3", 1_200, record_type="expensereport")
        conn.commit()
        assert _check(conn, AS_OFS[1]) > 0
        # A rate change re-prices a person's time (queued by the catch-up itself).
        conn.execute(
            "INSERT INTO hr.cost_rate (employee_id, effective_from, rate_minor, currency)"
            " VALUES ('E1', '2026-09-01', 8000, 'USD')"
        )
        conn.commit()
        _check(conn, AS_OFS[2])
        _time(conn, "t22", "P3", "2026-11-03", "3", "1.50")  # in the as-of month only
        conn.commit()
        assert _check(conn, AS_OFS[1]) > 0


def test_the_whole_months_are_read_on_another_connection_during_the_catch_up(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read aside starts once the actuals' lock is held and runs while the catch-up does (it
    waits here until the catch-up has started), on a backend of its own."""
    with psycopg.connect(clean_ods) as conn:
        _firm(conn)
        conn.commit()
        actuals.catch_up(conn)
        conn.commit()
        _time(conn, "t1", "P1", "2026-09-10", "1", "3.50")
        conn.commit()
        started = threading.Event()
        pids: list[int] = []
        real_read, real_catch_up = inputs._whole_month_cells, actuals.catch_up

        def read(c: psycopg.Connection, *args: Any) -> Any:
            pids.append(c.info.backend_pid)
            assert started.wait(30), "the catch-up did not start while the whole months were read"
            return real_read(c, *args)

        def catch_up(c: psycopg.Connection) -> Any:
            started.set()
            return real_catch_up(c)

        monkeypatch.setattr(inputs, "_whole_month_cells", read)
        monkeypatch.setattr(actuals, "catch_up", catch_up)
        _check(conn, AS_OFS[1])
        assert pids and pids[0] != conn.info.backend_pid


def test_a_read_aside_that_waits_for_a_lock_gives_up(clean_ods: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock request queued behind the refresh's connection (DDL on forecast.actual_month) would
    make the read aside wait for the refresh, which waits for it: it gives up after its lock
    timeout and the refresh reads the cells in turn, the same cells."""
    monkeypatch.setattr(inputs, "_ASIDE_LOCK_TIMEOUT", "200ms")
    with psycopg.connect(clean_ods) as conn, psycopg.connect(clean_ods) as other:
        _firm(conn)
        conn.commit()
        actuals.catch_up(conn)
        conn.commit()
        _time(conn, "t1", "P1", "2026-09-10", "1", "3.50")
        conn.commit()
        conn.execute("SELECT 1 FROM forecast.actual_month LIMIT 1")  # the refresh holds a lock on it
        ddl = threading.Thread(
            target=lambda: other.execute("LOCK TABLE forecast.actual_month IN ACCESS EXCLUSIVE MODE"),
            daemon=True,
        )
        ddl.start()
        for _ in range(100):  # until the DDL's request is queued behind the refresh
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'forecast.actual_month'::regclass"
            ).fetchone()
            if row and row[0]:
                break
            threading.Event().wait(0.05)
        else:
            pytest.fail("the DDL's lock request was not queued")
        _check(conn, AS_OFS[1])  # commits: the DDL gets its lock
        ddl.join(10)
        assert not ddl.is_alive()
        other.rollback()
