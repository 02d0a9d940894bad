"""The month-end close DAG through real Airflow (``dag.test()``) on a seeded month: real
PostgreSQL (the month of ``tests/reconcile/close_seed.py`` for LE-UK1), the ERP simulator over
loopback (periods open, the month's timebills and expense report). The periods are open, the sweep
is started, and the close report of November is stored per legal entity, written as HTML and JSON,
and reconciled; then an ERP invoice that differs fails the run, the report naming it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator, connect_airflow
from tests.reconcile.close_seed import seed_month

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

ENTITY, FUNCTIONAL = "LE-UK1", "GBP"
ENTITIES = {"LE-US1": "USD", "LE-US2": "USD", "LE-UK1": "GBP"}


def _dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.conftest import DAGS

    bag = DagBag(dag_folder=str(DAGS / "month_end_close.py"), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["month_end_close"]
    for task in dag.tasks:  # a failure should fail the test now, not after minutes of backoff
        task.retries = 0
    return dag


def _seed_erp(erp: RunningSimulator) -> None:
    timebill = {
        "type": "timebill",
        "tranDate": "2026-11-05",
        "subsidiary": {"externalId": ENTITY},
        "isBillable": True,
    }
    erp.admin(
        "POST",
        "/seed",
        json={
            "subsidiaries": [
                {"external_id": e, "name": e, "country": "US" if c == "USD" else "GB", "currency": c}
                for e, c in ENTITIES.items()
            ],
            "currencies": [{"symbol": "USD", "name": "US Dollar"}, {"symbol": "GBP", "name": "Pound"}],
            "accounting_periods": [
                {
                    "external_id": f"{e}-2026-12",
                    "subsidiary": e,
                    "period_name": "2026-12",
                    "start_date": date(2026, 12, 1).isoformat(),
                    "end_date": (date(2027, 1, 1) - timedelta(days=1)).isoformat(),
                }
                for e in ENTITIES
            ],
            "records": [
                timebill
                | {
                    "externalId": "psa-te-201",
                    "hours": "1.25",
                    "rate": "100.00",
                    "currency": {"refName": "USD"},
                    "exchangeRate": "0.9234",
                },
                timebill
                | {
                    "externalId": "psa-te-202",
                    "hours": "1.00",
                    "rate": "100.00",
                    "currency": {"refName": FUNCTIONAL},
                },
                {
                    "type": "expensereport",
                    "externalId": "psa-ex-301",
                    "tranDate": "2026-11-07",
                    "amount": "45.50",
                    "subsidiary": {"externalId": ENTITY},
                    "currency": {"refName": FUNCTIONAL},
                },
            ],
        },
    )


def test_the_close_runs_end_to_end_and_a_mismatch_fails_it(
    airflow_db: str,
    clean_ods: str,
    erp_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    seed_month(clean_ods, ENTITY, FUNCTIONAL)
    _seed_erp(erp_sim)
    connect_airflow(monkeypatch, clean_ods, erp=erp_sim)
    monkeypatch.setenv("PSA_ERP_SYNC_CLOSE_REPORT_DIR", str(tmp_path))
    dag = _dag()

    run = dag.test(logical_date=datetime(2026, 12, 1, 5, tzinfo=UTC))
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert states["close_report"] == "success"
    with psycopg.connect(clean_ods) as conn:
        rows = conn.execute(
            "SELECT legal_entity, reconciled, headline FROM close.report WHERE period = '2026-11' ORDER BY 1"
        ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [("LE-UK1", True), ("LE-US1", True), ("LE-US2", True)]
    uk = rows[0][2]
    assert uk["currencies"]["USD"] == {
        "revenue_recognized": "300.00",
        "billed": "500.00",
        "invoiced": "625.00",
        "credited": "125.00",
        "wip": "0.00",
        "wip_movement": "-200.00",
        "deferred": "50.00",
        "deferred_movement": "50.00",
        "leakage": "70.00",
    }
    assert uk["postings"] == {"confirmed": 6, "parked": 1, "pending": 0, "rejected": 0, "unplanned": 1}
    assert uk["open_exceptions"] == 3
    assert (tmp_path / "close_LE-UK1_2026-11.html").exists() and (
        tmp_path / "close_LE-UK1_2026-11.json"
    ).exists()

    with psycopg.connect(clean_ods) as conn:
        conn.execute("UPDATE billing.erp_invoice SET total_minor = 62400 WHERE external_id = 'inv-1'")
    capfd.readouterr()
    failed = dag.test(logical_date=datetime(2026, 12, 1, 6, tzinfo=UTC))
    states = {ti.task_id: ti.state for ti in failed.get_task_instances()}
    assert failed.state == "failed" and states["close_report"] == "failed", states
    logged = "".join(capfd.readouterr())  # the task log: the failure names the differing invoice
    assert "close report does not reconcile: LE-UK1 2026-11 invoices USD" in logged
    assert "inv-1: events 62500 USD, document 62500 USD, erp 62400 USD" in logged
    with psycopg.connect(clean_ods) as conn:
        stored = conn.execute(
            "SELECT body FROM close.report WHERE legal_entity = %s AND NOT reconciled", (ENTITY,)
        ).fetchone()
    assert stored is not None
    invoices = [r for r in stored[0]["reconciliation"] if r["area"] == "invoices"]
    assert invoices[0]["first_differences"] == [
        "inv-1: events 62500 USD, document 62500 USD, erp 62400 USD (minor units)"
    ]
