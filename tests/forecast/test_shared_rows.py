"""A refresh stores its scenario-free rows once (migration 0060): the actual layer's series and the
capacity series of the first snapshot written now; each later snapshot of the same write whose
rows are equal names it in ``forecast.snapshot.shares_from`` and the views ``forecast.line`` and
``forecast.capacity`` return for it exactly what they returned when it stored its own. Checked
against the same results written with every row stored (parallel connections share nothing)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date
from typing import Any

import psycopg
import pytest

from psa_erp_sync.forecast import model, store
from psa_erp_sync.forecast.settings import SCENARIOS, load_forecast_settings
from tests.forecast.test_line_series import _VIEW_ROWS, HAND_LINES, _expected, _result
from tests.migrated_before import database_before

pg = pytest.mark.integration
AS_OF = date(2026, 11, 9)

_LINE = (
    "SELECT project_ref, practice, legal_entity, layer, month, currency::text, amount_minor, "
    "reporting_amount_minor FROM forecast.line WHERE snapshot_id = %s ORDER BY 1, 2, 3, 4, 5"
)
_CAPACITY = (
    "SELECT user_ref, month, scheduled_centi, available_centi, over_allocated FROM forecast.capacity "
    "WHERE snapshot_id = %s ORDER BY 1, 2"
)
_HEADER = (
    "SELECT scenario, as_of, content_hash, line_count, totals FROM forecast.snapshot WHERE snapshot_id = %s"
)
_BALANCES = "SELECT * FROM forecast.contract_balance WHERE snapshot_id = %s ORDER BY project_ref"


@pytest.fixture(scope="module")
def results() -> list[model.ForecastResult]:
    from devtools.bench_forecast import synthetic_inputs

    inputs = synthetic_inputs(300, 12, AS_OF, seed=11)
    return model.compute_scenarios(inputs, load_forecast_settings(), SCENARIOS)


def _ids(versions: dict[str, str]) -> dict[str, str]:
    return {s: store.snapshot_id(s, AS_OF, versions) for s in SCENARIOS}


def _write(
    conn: psycopg.Connection, results: list[model.ForecastResult], versions: dict[str, str], how: str
) -> Any:
    common = {
        "snap_ids": _ids(versions),
        "run_id": "run-s",
        "data_versions": versions,
        "reporting_currency": "USD",
    }
    if how == "as-computed":
        return store.write_as_computed(conn, iter(results), **common)
    return store.write_snapshots(conn, results, parallel=how == "parallel", **common)


def _stored(conn: psycopg.Connection, snap_id: str) -> tuple[Any, ...]:
    """(shares_from, actual series, other series, capacity series) stored under the snapshot."""
    row = conn.execute(
        "SELECT (SELECT shares_from FROM forecast.snapshot WHERE snapshot_id = %(s)s), "
        "(SELECT count(*) FROM forecast.line_series WHERE snapshot_id = %(s)s AND layer = 'actual'), "
        "(SELECT count(*) FROM forecast.line_series WHERE snapshot_id = %(s)s AND layer <> 'actual'), "
        "(SELECT count(*) FROM forecast.capacity_series WHERE snapshot_id = %(s)s)",
        {"s": snap_id},
    ).fetchone()
    assert row is not None
    return tuple(row)


def _published(conn: psycopg.Connection, snap_id: str) -> list[Any]:
    return [conn.execute(q, (snap_id,)).fetchall() for q in (_HEADER, _LINE, _CAPACITY)] + [
        [row[1:] for row in conn.execute(_BALANCES, (snap_id,)).fetchall()]
    ]


@pg
@pytest.mark.parametrize("how", ["as-computed", "one-connection"])
def test_later_snapshots_store_no_actual_series_and_no_capacity_and_read_the_same(
    clean_ods: str, results: list[model.ForecastResult], how: str
) -> None:
    shared, whole = {"t": f"shared-{how}"}, {"t": f"whole-{how}"}
    with psycopg.connect(clean_ods) as conn:
        assert _write(conn, results, shared, how) == dict.fromkeys(SCENARIOS, True)
        assert _write(conn, results, whole, "parallel") == dict.fromkeys(SCENARIOS, True)
        assert _write(conn, results, shared, how) == dict.fromkeys(SCENARIOS, False)
        a, b = _ids(shared), _ids(whole)
        base = _stored(conn, a["base"])
        assert base[0] is None and base[1] > 0 and base[3] > 0
        assert _stored(conn, b["base"]) == base
        for scenario in ("best", "worst"):
            mine, full = _stored(conn, a[scenario]), _stored(conn, b[scenario])
            assert mine == (a["base"], 0, full[2], 0)
            assert full[0] is None and full[1] == base[1] and full[3] == base[3]
        for scenario in SCENARIOS:
            published = _published(conn, a[scenario])
            assert published == _published(conn, b[scenario])
            assert len(published[1]) == len(results[SCENARIOS.index(scenario)].lines)


@pg
def test_a_snapshot_found_stored_is_never_named(clean_ods: str, results: list[model.ForecastResult]) -> None:
    versions = {"t": "base-before"}
    ids = _ids(versions)
    with psycopg.connect(clean_ods) as conn:
        assert _write(conn, results[:1], versions, "one-connection") == {"base": True}
        assert _write(conn, results, versions, "as-computed") == {"base": False, "best": True, "worst": True}
        best = _stored(conn, ids["best"])
        assert best[0] is None and best[1] > 0 and best[3] > 0  # stores its own: base was found, not written
        assert _stored(conn, ids["worst"])[:2] == (ids["best"], 0)


@pg
def test_rows_that_differ_are_stored(clean_ods: str) -> None:
    versions = {"t": "differ"}
    other_actual = [(*row[:6], row[6] + 1, row[7] + 1) if row[3] == "actual" else row for row in HAND_LINES]
    capacity = _result(HAND_LINES).capacity.assign(available_centi=[16_000, 30_000], over_allocated=False)
    results = [
        _result(HAND_LINES, "base"),
        _result(other_actual, "best"),
        dataclasses.replace(_result(HAND_LINES, "worst"), capacity=capacity),
    ]
    ids = _ids(versions)
    with psycopg.connect(clean_ods) as conn:
        assert _write(conn, results, versions, "as-computed") == dict.fromkeys(SCENARIOS, True)
        for scenario in SCENARIOS:
            assert _stored(conn, ids[scenario]) == (None, 2, 3, 1)
        assert conn.execute(_VIEW_ROWS, (ids["best"],)).fetchall() == _expected(other_actual)
        assert conn.execute(_CAPACITY, (ids["worst"],)).fetchall() == [
            ("u1", model.month_start(model.month_index(AS_OF)), 4_000, 16_000, False),
            ("u1", model.month_start(model.month_index(AS_OF) + 1), 20_000, 30_000, False),
        ]


def test_equal_rows_from_other_objects_are_shared(results: list[model.ForecastResult]) -> None:
    """Compared by value, not by identity: a copy of the lines and capacity is still shared;
    one amount or one hour changed is not, nor a change to the very frame remembered."""

    def parts(result: model.ForecastResult) -> tuple[Any, Any]:
        lines, capacity = result.lines.copy(deep=True), result.capacity.copy(deep=True)
        return store._line_series_parts(lines), capacity

    shared = store.SharedRows()
    base_series, base_capacity = parts(results[0])
    shared.keep("fc-base", base_series, base_capacity)
    assert shared.same_as(*parts(results[1])) == "fc-base"
    series, capacity = parts(results[2])
    assert shared.same_as(series, capacity) == "fc-base"
    base_capacity.loc[0, "available_centi"] += 1  # the very frame remembered, changed afterwards
    assert shared.same_as(series, base_capacity) is None
    assert shared.same_as(series, capacity) == "fc-base"
    changed = capacity.copy()
    changed.loc[0, "scheduled_centi"] += 1
    assert shared.same_as(series, changed) is None
    lines = results[1].lines.copy(deep=True)
    actual = lines.index[lines["layer"] == "actual"][0]
    lines.loc[actual, ["amount_minor", "reporting_amount_minor"]] += 1
    assert shared.same_as(store._line_series_parts(lines), results[1].capacity) is None


@pytest.fixture
def db_before_0060(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database migrated up to (not including) 0060."""
    with database_before(pg_dsn, monkeypatch, 60) as dsn:
        yield dsn


@pg
def test_migration_keeps_what_stored_snapshots_read(db_before_0060: str) -> None:
    from psa_erp_sync.ods import migrate

    snap = "fc-base-20261109-00000000000000bb"
    month = model.month_start(model.month_index(AS_OF))
    with psycopg.connect(db_before_0060) as conn:
        conn.execute(
            "INSERT INTO forecast.snapshot (snapshot_id, scenario, as_of, run_id, data_versions, reporting_currency) "
            "VALUES (%s, 'base', %s, 'old-run', '{}', 'USD')",
            (snap, AS_OF),
        )
        conn.execute(
            "INSERT INTO forecast.line_series VALUES (%s, 'p-1', 'actual', 'Tech', 'LE-US1', 'USD', %s, "
            "'{5,NULL,7}', NULL), (%s, 'p-1', 'contracted', 'Tech', 'LE-US1', 'USD', %s, '{9}', NULL)",
            (snap, month, snap, month),
        )
        conn.execute(
            "INSERT INTO forecast.capacity_series VALUES (%s, 'u1', %s, '{4000,20000}', '{16000,16000}')",
            (snap, month),
        )
        conn.commit()
        before = [conn.execute(q, (snap,)).fetchall() for q in (_LINE, _CAPACITY)]
    assert migrate.apply(db_before_0060)[0] == "0060_forecast_shared_rows.sql"  # and any later ones
    with psycopg.connect(db_before_0060) as conn:
        assert [conn.execute(q, (snap,)).fetchall() for q in (_LINE, _CAPACITY)] == before
        assert len(before[0]) == 3 and len(before[1]) == 2
        for statement in (
            "UPDATE forecast.line SET amount_minor = 1 WHERE snapshot_id = %s",
            "DELETE FROM forecast.capacity WHERE snapshot_id = %s",
            "UPDATE forecast.snapshot SET shares_from = NULL WHERE snapshot_id = %s",
        ):
            with (
                pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="immutable"),
                conn.transaction(),
            ):
                conn.execute(statement, (snap,))
