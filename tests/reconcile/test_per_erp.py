"""Reconciliation per ERP (issue 15, deliverable 6): each routed ERP is read back and reconciled
with what it should hold, to the cent.

Real PostgreSQL, the NetSuite and SAP simulators over loopback, the posting task and
``ErpReconciliationOperator`` (LE-UK1 on NetSuite until 2026-12-31, on SAP from 2027-01-01).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator
from tests.two_erps import COMPANY, connect_two_erps, expense_entry, post, time_entry

pytestmark = pytest.mark.integration


def _reconcile(run_id: str) -> dict[str, Any]:
    from psa_erp_sync.operators.time_expense import ErpReconciliationOperator

    op = ErpReconciliationOperator(task_id="reconcile_erp")
    context = {"ti": None, "run_id": run_id, "dag": SimpleNamespace(dag_id="per_erp_test")}
    return op.execute(context)  # type: ignore[arg-type]


def _stages(dsn: str, run_id: str) -> dict[tuple[str, str], tuple[int, dict[str, str]]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT record_type, stage, record_count, amounts FROM audit.control_total WHERE run_id = %s",
            (run_id,),
        ).fetchall()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def test_each_erp_is_read_back_and_reconciled_to_the_cent(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    connect_two_erps(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 1, "2026-12-30", "a1", "1.50")  # NetSuite
        time_entry(conn, 2, "2026-12-31", "a2", "2.00")
        time_entry(conn, 3, "2027-01-01", "a3", "3.25")  # SAP
        time_entry(conn, 4, "2027-01-04", "a4", "4.00", 12_345)
        expense_entry(conn, 11, "2026-12-15", 4_550)  # NetSuite
        expense_entry(conn, 12, "2027-01-15", 12_001)  # SAP
        # Foreign-currency work in SAP: EUR 100.00 at 0.855 = GBP 85.50 (LE-UK1's functional currency).
        expense_entry(conn, 13, "2027-01-20", 10_000)
        conn.execute(
            "UPDATE canonical.expense_entry SET currency = 'EUR', functional_currency = 'GBP',"
            " functional_amount_minor = 8550, fx_rate = 0.855, fx_rate_date = '2027-01-20'"
            " WHERE source_id = '13'"
        )
    assert post("timebill", "per-erp-1")["still_pending"] == 0
    assert post("expensereport", "per-erp-1")["still_pending"] == 0
    # A December entry moved into January: reversed in NetSuite, posted in SAP.
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 2, "2027-01-02", "a2b", "2.50")
    assert post("timebill", "per-erp-2")["rejected"] == 0

    report = _reconcile("per-erp-r1")
    time = report["timebill"]
    assert time["by_erp"]["netsuite"]["erp"]["count"] == 1  # entry 1
    assert time["by_erp"]["sap"]["erp"]["count"] == 3  # entries 2, 3 and 4
    # SAP: 2.50 + 3.25 h at 100.00, 4.00 h at 123.45 = GBP 1068.80
    assert time["by_erp"]["sap"]["erp"]["amounts_minor"] == {"GBP": 106_880}
    assert time["by_erp"]["sap"]["erp"]["hours"] == "9.75"
    assert time["erp"]["amounts_minor"] == {"GBP": 106_880 + 15_000}
    expenses = report["expensereport"]["by_erp"]
    assert (expenses["netsuite"]["erp"]["amounts_minor"], expenses["sap"]["erp"]["amounts_minor"]) == (
        {"GBP": 4_550},
        {"EUR": 10_000, "GBP": 12_001},
    )
    # Both currencies in SAP: its transaction amounts at the rates we sent it (SAP holds no
    # functional amount) equal the functional amounts, per entity x period x currency.
    sap_fx = expenses["sap"]["both_currencies"]
    assert sap_fx["differing"] == [] and sap_fx["functional"]["erp"] == {"GBP": 12_001 + 8_550}
    assert sap_fx["functional"]["expected"] == sap_fx["functional"]["erp"]
    assert time["by_erp"]["sap"]["both_currencies"]["functional"]["erp"] == {"GBP": 106_880}
    stages = _stages(clean_ods, "per-erp-r1")
    assert stages[("expensereport", "erp_readback_functional:sap")] == (2, {"GBP": "20551"})
    assert stages[("expensereport", "erp_readback_functional")] == (3, {"GBP": "25101"})
    assert stages[("timebill", "erp_readback:sap")] == (3, {"GBP": "106880"})
    assert stages[("timebill", "erp_readback:netsuite")] == (1, {"GBP": "15000"})
    assert stages[("timebill", "erp_readback")] == (4, {"GBP": "121880"})

    # The ODS's functional amount no longer what SAP's amount is at the rate we sent: named.
    from psa_erp_sync.reconcile.control_totals import ControlTotalMismatch

    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute(
            "UPDATE canonical.expense_entry SET functional_amount_minor = 8551 WHERE source_id = '13'"
        )
    with pytest.raises(ControlTotalMismatch) as fx_failure:
        _reconcile("per-erp-fx")
    assert "expensereport in both currencies: LE-UK1 2027-01 EUR" in str(fx_failure.value), fx_failure.value
    assert "psa-ex-13: expected 10000 EUR = 8551 GBP (minor units), ERP has 10000 EUR = 8550 GBP" in str(
        fx_failure.value
    )
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute(
            "UPDATE canonical.expense_entry SET functional_amount_minor = 8550 WHERE source_id = '13'"
        )

    # An entry's hours changed in SAP by someone else (cancelled, re-entered with 0.01 h more).
    from psa_erp_sync.clients.sap import S4HanaClient
    from psa_erp_sync.clients.sap_models import TimeSheetInput

    with S4HanaClient(base_url=sap_sim.base_url, user="PSA_COMM", password="secret") as client:
        [live] = [
            e
            for e in client.company_timesheets(COMPANY)
            if e.is_live and " psa:3 " in e.TimeSheetDataFields.TimeSheetNoteText
        ]
        client.delete_timesheet(live)
        changed = TimeSheetInput(
            person_work_agreement_external_id="psa-user-7",
            company_code=COMPANY,
            day=live.TimeSheetDate,
            hours=live.TimeSheetDataFields.RecordedHours + Decimal("0.01"),
            activity_type="T001",
            wbs_element="psa-project-42",
            note="psa:3 edited in SAP",
        )
        client.create_timesheet(changed, idempotency_key="manual-edit")
    with pytest.raises(ControlTotalMismatch) as failure:
        _reconcile("per-erp-r2")
    message = str(failure.value)
    assert (
        "timebill in sap:" in message
        and "psa-te-3: expected 3.25 h, 32500 GBP (minor units), ERP has 3.26 h, 32600 GBP" in message
    ), message
    assert "timebill in netsuite" not in message  # NetSuite still reconciles
