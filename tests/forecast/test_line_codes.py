"""The model hands the store its lines' text columns already factorized (``ForecastResult.codes``):
the snapshot written from them is the snapshot written by factorizing the strings again, row for
row, and the totals and reporting amounts are the ones computed from the strings."""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import numpy as np
import psycopg
import pytest

from psa_erp_sync.forecast import model, store
from psa_erp_sync.forecast.settings import SCENARIOS, load_forecast_settings

AS_OF = date(2026, 11, 9)


@pytest.fixture(scope="module")
def results() -> list[model.ForecastResult]:
    from devtools.bench_forecast import synthetic_inputs

    inputs = synthetic_inputs(300, 12, AS_OF, seed=7)
    # An opportunity in a currency with no configured rate, in a stage the pipeline ignores:
    # its code exists but no line uses it, so no rate may be asked for.
    opps = inputs.opportunities.copy()
    opps.loc[0, ["currency", "stage"]] = ["XXX", "Closed Lost"]
    inputs = dataclasses.replace(inputs, opportunities=opps)
    return model.compute_scenarios(inputs, load_forecast_settings(), SCENARIOS)


def test_codes_describe_the_lines(results: list[model.ForecastResult]) -> None:
    for result in results:
        codes = model.line_codes(result)
        assert codes is not None
        assert set(result.lines["layer"]) == {"actual", "contracted", "pipeline"}
        for column in model.TEXT_LINE_COLUMNS:
            values, uniques = codes[column]
            rebuilt = np.asarray(uniques, dtype=object)[values]
            assert (rebuilt == result.lines[column].to_numpy(dtype=object)).all(), column


def test_totals_and_reporting_amounts_are_those_of_the_strings(results: list[model.ForecastResult]) -> None:
    settings = load_forecast_settings()
    for result in results:
        assert result.totals == model.totals_of(result.lines, result.balances, result.capacity, settings)
        plain = model.reporting_amounts(result.lines["amount_minor"], result.lines["currency"], settings)
        assert (result.lines["reporting_amount_minor"].to_numpy() == plain).all()


def test_codes_of_lines_changed_afterwards_are_not_used(results: list[model.ForecastResult]) -> None:
    result = results[0]
    shorter = dataclasses.replace(result, lines=result.lines.iloc[:-1])
    assert model.line_codes(shorter) is None
    assert model.line_codes(dataclasses.replace(result, codes=None)) is None


def _stored(conn: psycopg.Connection, snap_id: str) -> dict[str, Any]:
    def rows(sql: str) -> list[tuple[Any, ...]]:
        return conn.execute(sql, (snap_id,)).fetchall()

    return {
        "header": rows(
            "SELECT scenario, as_of, content_hash, line_count, totals FROM forecast.snapshot WHERE snapshot_id = %s"
        ),
        "series": rows(
            "SELECT project_ref, layer, practice, legal_entity, currency, first_month, amount_minor,"
            " reporting_amount_minor FROM forecast.line_series WHERE snapshot_id = %s ORDER BY 1, 2"
        ),
        "balances": rows(
            "SELECT * FROM forecast.contract_balance WHERE snapshot_id = %s ORDER BY project_ref"
        ),
        "capacity": rows(
            "SELECT user_ref, first_month, scheduled_centi, available_centi FROM forecast.capacity_series"
            " WHERE snapshot_id = %s ORDER BY 1"
        ),
    }


@pytest.mark.integration
def test_snapshot_from_codes_is_the_snapshot_from_strings(
    clean_ods: str, results: list[model.ForecastResult]
) -> None:
    with psycopg.connect(clean_ods) as conn:
        for result in results:
            stored = []
            for variant, codes in (("codes", result.codes), ("strings", None)):
                versions = {"variant": variant}
                snap_id = store.snapshot_id(result.scenario, AS_OF, versions)
                assert store.write_snapshot(
                    conn,
                    dataclasses.replace(result, codes=codes),
                    snap_id=snap_id,
                    run_id="t",
                    data_versions=versions,
                    reporting_currency="USD",
                )
                got = _stored(conn, snap_id)
                got["balances"] = [row[1:] for row in got["balances"]]  # without the snapshot id
                stored.append(got)
            assert stored[0]["series"], "nothing written"
            assert stored[0] == stored[1]
