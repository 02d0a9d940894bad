"""The billing read-back DAG through real Airflow (``dag.test()``), the ERP simulator and the ODS:
a first run lands every billing record, a second run re-reads the overlap and writes nothing."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tests.billing.test_readback import DECEMBER, seed_billing, truncate_billing
from tests.conftest import RunningSimulator, connect_airflow
from tests.dags.test_master_data_dag import load_dag
from tests.simulators.test_erp_sim import BASE_SEED

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

AS_OF = datetime(2026, 12, 6, 12, tzinfo=UTC)


def test_billing_readback_dag(
    airflow_db: str, clean_ods: str, erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = copy.deepcopy(BASE_SEED)
    seed["accounting_periods"] += DECEMBER
    erp_sim.admin("POST", "/seed", json=seed)
    with httpx.Client(base_url=erp_sim.base_url, headers={"Authorization": "Bearer t"}, timeout=30) as http:
        seed_billing(http, erp_sim)
    truncate_billing(clean_ods)
    connect_airflow(monkeypatch, clean_ods, erp=erp_sim)
    dag = load_dag("billing_readback.py", "billing_readback")
    first = dag.test(logical_date=AS_OF)
    assert first.state == "success"
    second = dag.test(logical_date=AS_OF + timedelta(hours=1))
    assert second.state == "success"
    with psycopg.connect(clean_ods) as conn:
        held: dict[str, Any] = dict(
            conn.execute("SELECT record_type, count(*) FROM billing.erp_invoice GROUP BY 1").fetchall()
        )
        marks = dict(
            conn.execute("SELECT record_type, last_changed FROM billing.erp_readback_watermark").fetchall()
        )
        runs = {r[0] for r in conn.execute("SELECT DISTINCT read_run_id FROM billing.erp_invoice")}
    truncate_billing(clean_ods)
    assert held == {"invoice": 2, "creditmemo": 1}
    assert marks == {"invoice": 0, "creditmemo": 0, "customerpayment": 0, "journalentry": 0}
    assert runs == {first.run_id}
