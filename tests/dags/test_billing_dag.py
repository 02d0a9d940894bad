"""The billing DAG through real Airflow (``dag.test()``): ready billing events in real PostgreSQL
become ERP invoices in the ERP simulator over loopback; a second run sends nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from tests.billing.invoicing import Firm, assert_billed_exactly_once, clean_billing, insert_events
from tests.conftest import RunningSimulator, connect_airflow

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


def _dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.conftest import DAGS

    bag = DagBag(dag_folder=str(DAGS / "billing.py"), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["billing"]
    for task in dag.tasks:  # a failure should fail the test now, not after minutes of backoff
        task.retries = 0
    return dag


def test_billing_dag_invoices_ready_events(
    airflow_db: str, clean_ods: str, erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_billing(clean_ods)
    firm = Firm(customers=3, projects=6)
    firm.seed_erp(erp_sim)
    insert_events(clean_ods, firm.events(120))
    connect_airflow(monkeypatch, clean_ods, erp=erp_sim)
    dag = _dag()
    assert [t.task_id for t in dag.tasks] == ["invoice"]
    run = dag.test(logical_date=datetime(2026, 12, 1, 7, tzinfo=UTC))
    assert run.state == "success", run.state
    figures = assert_billed_exactly_once(clean_ods)
    assert figures["lines"] == 120 and figures["invoices"] > 0
    jobs = erp_sim.admin("GET", "/stats")["batch_jobs"]

    again = _dag().test(logical_date=datetime(2026, 12, 2, 7, tzinfo=UTC))
    assert again.state == "success"
    assert erp_sim.admin("GET", "/stats")["batch_jobs"] == jobs  # nothing sent again
    with psycopg.connect(clean_ods) as conn:
        assert conn.execute("SELECT DISTINCT state FROM billing.document").fetchall() == [("posted",)]
