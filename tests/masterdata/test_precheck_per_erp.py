"""The posting pre-check judges each project use by the ERP it routes to (issue 15, deliverable 6).

Real PostgreSQL, the NetSuite and SAP simulators over loopback, ``ProjectPrecheckOperator``: LE-UK1's
December work is checked against NetSuite's master data, its 2027 work against SAP's company codes
and posting periods; SAP defines no 2028 periods, so 2028 work is ``PERIOD_UNKNOWN``.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.conftest import RunningSimulator
from tests.two_erps import connect_two_erps, time_entry

pytestmark = pytest.mark.integration


def test_each_use_is_checked_against_its_routed_erp(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from psa_erp_sync.operators.erp_validation import ProjectPrecheckOperator

    connect_two_erps(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute("DELETE FROM master.validation_verdict WHERE domain = 'time_expense'")
        time_entry(conn, 1, "2026-12-30", "a1", "1.50")  # NetSuite
        time_entry(conn, 2, "2027-01-04", "a2", "2.00")  # SAP, period defined
        time_entry(conn, 3, "2028-03-01", "a3", "1.00")  # SAP, no 2028 period there
    op = ProjectPrecheckOperator(task_id="precheck")
    result = op.execute({"run_id": "precheck-per-erp"})  # type: ignore[arg-type]
    # Its declared ERP inputs: what each ERP it asked holds, in that ERP's own namespace.
    inputs, _ = op.lineage_datasets()
    erp_inputs = {(d.namespace, d.name) for d in inputs if not d.namespace.startswith("postgres")}
    assert erp_inputs == {
        *(
            (erp_sim.base_url, f"/services/rest/record/v1/{t}")
            for t in ("job", "customer", "subsidiary", "currency")
        ),
        (sap_sim.base_url, "/sap/opu/odata/sap/ZPSA_JOURNALENTRY_SRV/PostingPeriodCollection"),
    }
    with psycopg.connect(clean_ods) as conn:
        verdicts = dict(
            conn.execute(
                "SELECT record_key, reason_codes FROM master.validation_verdict WHERE domain = 'time_expense'"
            ).fetchall()
        )
        items = conn.execute(
            "SELECT source_id, reason_code, owner FROM exceptions.item WHERE kind = 'validation' AND status = 'open'"
        ).fetchall()
    assert verdicts == {"42|LE-UK1|GBP": [], "42|LE-UK1|GBP|sap": ["PERIOD_UNKNOWN"]}, verdicts
    assert items == [("42|LE-UK1|GBP|sap", "PERIOD_UNKNOWN", "finance-ops-uk")]
    assert result["blocked_projects"] == {"42": ["PERIOD_UNKNOWN"]}

    # SAP opens 2028: the next pre-check resolves the item.
    sap_sim.admin(
        "POST", "/periods", json=[{"company_code": "2010", "fiscal_year": 2028, "period": 3, "open": True}]
    )
    again = ProjectPrecheckOperator(task_id="precheck").execute({"run_id": "precheck-per-erp-2"})  # type: ignore[arg-type]
    assert again["blocked_projects"] == {} and again["resolved"] == 1, again
