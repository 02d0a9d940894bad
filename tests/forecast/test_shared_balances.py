"""A refresh stores its contract balances once when they are equal (migration 0064): a later
snapshot of the same write whose balances equal the first's names it in
``forecast.snapshot.balances_from`` and the view ``forecast.contract_balance`` returns for it
exactly what it returned when it stored its own. Checked against the same results written with
every row stored (parallel connections share nothing)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import psycopg
import pytest

from psa_erp_sync.forecast import model, store
from psa_erp_sync.forecast.settings import SCENARIOS
from tests.forecast.test_shared_rows import _BALANCES, AS_OF, _ids, _published, _write, results
from tests.migrated_before import database_before

pg = pytest.mark.integration
__all__ = ["results"]  # the module fixture, shared


def _balances_stored(conn: psycopg.Connection, snap_id: str) -> tuple[str | None, int]:
    """(balances_from, balance rows stored under the snapshot itself)."""
    row = conn.execute(
        "SELECT (SELECT balances_from FROM forecast.snapshot WHERE snapshot_id = %(s)s), "
        "(SELECT count(*) FROM forecast.contract_balance_row WHERE snapshot_id = %(s)s)",
        {"s": snap_id},
    ).fetchone()
    assert row is not None
    return row[0], int(row[1])


@pg
@pytest.mark.parametrize("how", ["as-computed", "one-connection"])
def test_equal_balances_are_stored_once_and_read_the_same(
    clean_ods: str, results: list[model.ForecastResult], how: str
) -> None:
    shared, whole = {"t": f"bal-{how}"}, {"t": f"bal-whole-{how}"}
    with psycopg.connect(clean_ods) as conn:
        assert _write(conn, results, shared, how) == dict.fromkeys(SCENARIOS, True)
        assert _write(conn, results, whole, "parallel") == dict.fromkeys(SCENARIOS, True)
        assert _write(conn, results, shared, how) == dict.fromkeys(SCENARIOS, False)  # nothing again
        a, b = _ids(shared), _ids(whole)
        count = len(results[0].balances)
        assert count > 0 and _balances_stored(conn, a["base"]) == (None, count)
        for scenario in ("best", "worst"):
            assert _balances_stored(conn, a[scenario]) == (a["base"], 0)
            assert _balances_stored(conn, b[scenario]) == (None, count)
        for scenario in SCENARIOS:
            assert _published(conn, a[scenario]) == _published(conn, b[scenario])
            balances = conn.execute(_BALANCES, (a[scenario],)).fetchall()
            assert len(balances) == count and {r[0] for r in balances} == {a[scenario]}


@pg
def test_balances_that_differ_are_stored(clean_ods: str, results: list[model.ForecastResult]) -> None:
    versions = {"t": "bal-differ"}
    other = results[1].balances.copy()
    other.loc[other.index[0], "catch_up_minor"] += 1
    differing = [results[0], dataclasses.replace(results[1], balances=other), results[2]]
    ids = _ids(versions)
    with psycopg.connect(clean_ods) as conn:
        assert _write(conn, differing, versions, "as-computed") == dict.fromkeys(SCENARIOS, True)
        count = len(other)
        assert _balances_stored(conn, ids["base"]) == (None, count)
        assert _balances_stored(conn, ids["best"]) == (None, count)
        assert _balances_stored(conn, ids["worst"]) == (ids["base"], 0)
        best = conn.execute(_BALANCES, (ids["best"],)).fetchall()
        base = conn.execute(_BALANCES, (ids["base"],)).fetchall()
        assert [r[1:] for r in base] == [r[1:] for r in conn.execute(_BALANCES, (ids["worst"],)).fetchall()]
        assert sum(r[1:] != s[1:] for r, s in zip(best, base, strict=True)) == 1


def test_balances_compared_by_value(results: list[model.ForecastResult]) -> None:
    """A copy is shared; one amount, a NULL or a dtype changed is not, nor a change to the
    very frame remembered; no balances (nothing to store) names nothing."""
    shared = store.SharedRows()
    base = results[0].balances.copy(deep=True)
    shared.keep("fc-base", store._line_series_parts(results[0].lines), results[0].capacity, None, base)
    assert shared.same_balances(results[1].balances.copy(deep=True)) == "fc-base"
    base.loc[base.index[0], "backlog_minor"] += 1  # the very frame remembered, changed afterwards
    assert shared.same_balances(base) is None
    assert shared.same_balances(results[2].balances) == "fc-base"
    changed = results[2].balances.copy()
    changed.loc[changed.index[-1], "cum_billed_minor"] += 1
    assert shared.same_balances(changed) is None
    known = results[2].balances.copy()  # a missing prior (NULL) now known
    known.loc[known.index[0], "prior_cum_revenue_minor"] = 0
    assert shared.same_balances(known) is None
    retyped = results[2].balances.astype({"backlog_minor": "Int64"})  # the same numbers, another dtype
    assert shared.same_balances(retyped) is None
    assert shared.same_balances(results[2].balances.iloc[:0]) is None
    assert store.SharedRows().same_balances(results[2].balances) is None  # nothing kept yet


@pg
def test_the_view_refuses_changes_and_rows_beside_shared_ones(
    clean_ods: str, results: list[model.ForecastResult]
) -> None:
    versions = {"t": "bal-refuse"}
    ids = _ids(versions)
    row = "(%s, 'p-9', 'fixed_fee', 'LE-US1', 'USD', 1, 0, 0, 0, 0, NULL, 0, 0, 0, 0, 0, 0)"
    with psycopg.connect(clean_ods) as conn:
        _write(conn, results, versions, "as-computed")
        conn.commit()
        for statement, scenario in (
            ("UPDATE forecast.contract_balance SET cum_billed_minor = 0 WHERE snapshot_id = %s", "best"),
            ("DELETE FROM forecast.contract_balance WHERE snapshot_id = %s", "worst"),
            ("DELETE FROM forecast.contract_balance_row WHERE snapshot_id = %s", "base"),
            ("UPDATE forecast.snapshot SET balances_from = NULL WHERE snapshot_id = %s", "best"),
            ("DELETE FROM forecast.snapshot WHERE snapshot_id = %s", "best"),
            (f"INSERT INTO forecast.contract_balance VALUES {row}", "best"),
            (f"INSERT INTO forecast.contract_balance_row VALUES {row}", "worst"),
        ):
            with pytest.raises(psycopg.errors.IntegrityConstraintViolation), conn.transaction():
                conn.execute(statement, (ids[scenario],))
        conn.execute(f"INSERT INTO forecast.contract_balance VALUES {row}", (ids["base"],))  # passed on
        assert _balances_stored(conn, ids["base"])[1] == len(results[0].balances) + 1
        assert len(conn.execute(_BALANCES, (ids["worst"],)).fetchall()) == len(results[0].balances) + 1
        conn.rollback()


@pytest.fixture
def db_before_0064(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database migrated up to (not including) 0064."""
    with database_before(pg_dsn, monkeypatch, 64) as dsn:
        yield dsn


@pg
def test_migration_keeps_what_stored_snapshots_read(db_before_0064: str) -> None:
    from psa_erp_sync.ods import migrate

    snap = "fc-base-20261109-00000000000000cc"
    with psycopg.connect(db_before_0064) as conn:
        conn.execute(
            "INSERT INTO forecast.snapshot (snapshot_id, scenario, as_of, run_id, data_versions, reporting_currency) "
            "VALUES (%s, 'base', %s, 'old-run', '{}', 'USD')",
            (snap, AS_OF),
        )
        conn.execute(
            "INSERT INTO forecast.contract_balance VALUES "
            "(%s, 'p-1', 'fixed_fee', 'LE-US1', 'USD', 100, 40, 60, 100, 40, NULL, 40, 30, 10, 0, 0, 60), "
            "(%s, 'p-2', 'time_and_materials', 'LE-US1', 'USD', 50, 50, 0, 50, 50, 20, 30, 60, 0, 10, 0, 0)",
            (snap, snap),
        )
        conn.commit()
        before = conn.execute(_BALANCES, (snap,)).fetchall()
        columns = [
            d.name for d in conn.execute("SELECT * FROM forecast.contract_balance LIMIT 0").description or ()
        ]
    assert "0064_forecast_shared_balances.sql" in migrate.apply(db_before_0064)
    with psycopg.connect(db_before_0064) as conn:
        assert conn.execute(_BALANCES, (snap,)).fetchall() == before and len(before) == 2
        after = conn.execute("SELECT * FROM forecast.contract_balance LIMIT 0").description or ()
        assert [d.name for d in after] == columns
