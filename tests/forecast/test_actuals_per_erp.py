"""The forecast's actuals consolidate both ERPs (issue 15, deliverable 6).

Real PostgreSQL, the NetSuite and SAP simulators and the posting task: LE-UK1's December time goes
to NetSuite, its January time (and a December entry moved into January) to SAP. The forecast's
posted actuals per month equal each ERP's read-back (December = NetSuite, January = SAP), every
record counted once, and convert into the reporting currency with the configured rate.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest

from tests.conftest import RunningSimulator
from tests.two_erps import UK, connect_two_erps, post, time_entry

pytestmark = pytest.mark.integration


def _month(day: date) -> int:
    return day.year * 12 + day.month - 1


def test_posted_actuals_are_both_erps_once_each_in_the_reporting_currency(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import pandas as pd

    from psa_erp_sync.forecast import inputs, model
    from psa_erp_sync.forecast.settings import load_forecast_settings
    from psa_erp_sync.operators.time_expense import ErpReconciliationOperator

    connect_two_erps(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 1, "2026-12-30", "a1", "1.50")  # NetSuite
        time_entry(conn, 2, "2026-12-31", "a2", "2.00")
        time_entry(conn, 3, "2027-01-01", "a3", "3.25")  # SAP
        time_entry(conn, 4, "2027-01-04", "a4", "4.00", 12_345)
    assert post("timebill", "actuals-per-erp-1")["still_pending"] == 0
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 2, "2027-01-02", "a2b", "2.50")  # moved: reversed in NetSuite, posted in SAP
    assert post("timebill", "actuals-per-erp-2")["still_pending"] == 0

    settings = load_forecast_settings()
    project = {c: None for c in model.PROJECT_COLUMNS} | {
        "project_ref": "42",
        "legal_entity": UK,
        "currency": "GBP",
    }
    projects = pd.DataFrame([project])
    with psycopg.connect(clean_ods) as conn:
        actuals = inputs._actuals(conn, date(2027, 1, 31), projects, settings)
    revenue = {int(r.month): int(r.revenue_minor) for r in actuals.itertuples() if r.project_ref == "42"}
    context = {"ti": None, "run_id": "actuals-per-erp-r", "dag": SimpleNamespace(dag_id="actuals_per_erp")}
    report = ErpReconciliationOperator(task_id="reconcile_erp", record_types=("timebill",)).execute(context)  # type: ignore[arg-type]
    by_erp = report["timebill"]["by_erp"]
    assert revenue == {
        _month(date(2026, 12, 1)): by_erp["netsuite"]["erp"]["amounts_minor"]["GBP"],  # 1.50 h x 100.00
        _month(date(2027, 1, 1)): by_erp["sap"]["erp"]["amounts_minor"][
            "GBP"
        ],  # 2.50 + 3.25 h, 4.00 h x 123.45
    }
    assert revenue == {_month(date(2026, 12, 1)): 15_000, _month(date(2027, 1, 1)): 106_880}
    # Consolidated in the reporting currency at the configured rate, both ERPs in one figure.
    total = model.to_reporting(sum(revenue.values()), "GBP", settings)
    num, den = model.fx_factor("GBP", settings)
    assert settings.reporting_currency != "GBP" and total == round(121_880 * num / den)
