"""``store.write_as_computed``: each scenario's snapshot written by a writer thread while the next
scenario is computed. Checked in real PostgreSQL: the next compute really runs during the write,
what is stored equals the one-at-a-time write, and a failed write, a failed compute or a backend
killed mid-write never leaves a partial snapshot visible."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from psa_erp_sync.forecast import model, store
from tests.forecast.test_line_series import _VIEW_ROWS, AS_OF, HAND_LINES, _expected, _result

pg = pytest.mark.integration
SCENARIOS = ("base", "best", "worst")


def _results() -> list[model.ForecastResult]:
    results = [_result(HAND_LINES, s) for s in SCENARIOS]
    results[2] = _result(HAND_LINES[:4], "worst")
    return results


def _ids(versions: dict[str, str]) -> dict[str, str]:
    return {s: store.snapshot_id(s, AS_OF, versions) for s in SCENARIOS}


def _write(conn: psycopg.Connection, results: Any, versions: dict[str, str]) -> dict[str, bool]:
    return store.write_as_computed(
        conn,
        results,
        snap_ids=_ids(versions),
        run_id="run-w",
        data_versions=versions,
        reporting_currency="USD",
    )


def _stored(dsn: str, snap_id: str) -> tuple[int, int, int, int]:
    """(headers, line_series rows, capacity_series rows, balances) of a snapshot, on a new connection."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM forecast.snapshot WHERE snapshot_id = %(s)s), "
            "(SELECT count(*) FROM forecast.line_series WHERE snapshot_id = %(s)s), "
            "(SELECT count(*) FROM forecast.capacity_series WHERE snapshot_id = %(s)s), "
            "(SELECT count(*) FROM forecast.contract_balance WHERE snapshot_id = %(s)s)",
            {"s": snap_id},
        ).fetchone()
    assert row is not None
    return row


@pg
def test_the_next_scenario_is_computed_while_the_previous_one_is_written(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = {"t": "overlap"}
    writing = threading.Event()  # the writer is inside base's write
    computed = threading.Event()  # best was computed meanwhile
    write_snapshot = store.write_snapshot

    def slow_write(conn: psycopg.Connection, result: model.ForecastResult, **kwargs: Any) -> bool:
        if result.scenario == "base":
            writing.set()
            assert computed.wait(10), "best was not computed while base was being written"
        return write_snapshot(conn, result, **kwargs)

    def lazily() -> Iterator[model.ForecastResult]:
        results = _results()
        yield results[0]
        assert writing.wait(10), "base's write did not start before best was computed"
        computed.set()
        yield from results[1:]

    monkeypatch.setattr(store, "write_snapshot", slow_write)
    with psycopg.connect(clean_ods) as conn:
        assert _write(conn, lazily(), versions) == {"base": True, "best": True, "worst": True}
        assert _write(conn, iter(_results()), versions) == {"base": False, "best": False, "worst": False}
        ids = _ids(versions)
        for scenario in SCENARIOS:
            rows = conn.execute(_VIEW_ROWS, (ids[scenario],)).fetchall()
            assert rows == _expected(HAND_LINES[:4] if scenario == "worst" else HAND_LINES)
    # The same rows, headers and hashes as the one-at-a-time write of the same results.
    other = {"t": "sequential"}
    with psycopg.connect(clean_ods) as conn:
        store.write_snapshots(
            conn,
            _results(),
            snap_ids=_ids(other),
            run_id="run-w",
            data_versions=other,
            reporting_currency="USD",
        )
        for scenario in SCENARIOS:
            a, b = _ids(versions)[scenario], _ids(other)[scenario]
            for table, columns in (
                (
                    "forecast.line_series",
                    "project_ref, layer, practice, legal_entity, currency, first_month, "
                    "amount_minor, reporting_amount_minor",
                ),
                ("forecast.capacity_series", "user_ref, first_month, scheduled_centi, available_centi"),
                ("forecast.snapshot", "scenario, as_of, content_hash, line_count, totals"),
            ):
                query = f"SELECT {columns} FROM {table} WHERE snapshot_id = %s ORDER BY 1, 2"
                assert conn.execute(query, (a,)).fetchall() == conn.execute(query, (b,)).fetchall()


@pg
def test_a_failed_write_rolls_its_snapshot_back_raises_and_writes_nothing_after(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = {"t": "write-fails"}
    copy_balances = store._copy_balances

    def failing(conn: psycopg.Connection, snap_id: str, balances: Any) -> None:
        if snap_id == _ids(versions)["best"]:  # after best's header and line series went in
            raise RuntimeError("disk full")
        copy_balances(conn, snap_id, balances)

    monkeypatch.setattr(store, "_copy_balances", failing)
    with psycopg.connect(clean_ods) as conn, pytest.raises(RuntimeError, match="disk full"):
        _write(conn, iter(_results()), versions)
    ids = _ids(versions)
    assert _stored(clean_ods, ids["base"]) == (1, 5, 1, 0)
    assert _stored(clean_ods, ids["best"]) == (0, 0, 0, 0)
    assert _stored(clean_ods, ids["worst"]) == (0, 0, 0, 0)
    monkeypatch.setattr(store, "_copy_balances", copy_balances)
    with psycopg.connect(clean_ods) as conn:  # a re-run writes what is missing
        assert _write(conn, iter(_results()), versions) == {"base": False, "best": True, "worst": True}


@pg
def test_a_failed_compute_raises_after_the_write_in_flight_committed(clean_ods: str) -> None:
    versions = {"t": "compute-fails"}

    def failing() -> Iterator[model.ForecastResult]:
        yield _results()[0]
        raise ValueError("bad input")

    with psycopg.connect(clean_ods) as conn, pytest.raises(ValueError, match="bad input"):
        _write(conn, failing(), versions)
    ids = _ids(versions)
    assert _stored(clean_ods, ids["base"]) == (1, 5, 1, 0)
    assert _stored(clean_ods, ids["best"]) == (0, 0, 0, 0)


@pg
def test_a_backend_killed_mid_write_leaves_no_visible_snapshot(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = {"t": "crash"}
    copy_balances = store._copy_balances

    def crash(conn: psycopg.Connection, snap_id: str, balances: Any) -> None:
        if snap_id == _ids(versions)["best"]:  # best's header and line series sent, not committed
            with psycopg.connect(clean_ods, autocommit=True) as killer:
                killer.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        copy_balances(conn, snap_id, balances)
        conn.execute("SELECT 1")  # the write goes on: the next statement finds the backend gone

    monkeypatch.setattr(store, "_copy_balances", crash)
    with pytest.raises(psycopg.OperationalError), psycopg.connect(clean_ods) as conn:
        _write(conn, iter(_results()), versions)
    ids = _ids(versions)
    assert _stored(clean_ods, ids["base"]) == (1, 5, 1, 0)
    assert _stored(clean_ods, ids["best"]) == (0, 0, 0, 0)
    assert _stored(clean_ods, ids["worst"]) == (0, 0, 0, 0)
