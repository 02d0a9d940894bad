"""The billing DAG through real Airflow (``dag.test()``): posted billable time in real PostgreSQL
becomes billing events (``build_billing_events``) and then ERP invoices in the ERP simulator over
loopback; a second run creates no event and sends nothing."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.billing.conftest import entry, project
from tests.billing.invoicing import Firm, assert_billed_exactly_once, clean_billing
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


def _posted_month(dsn: str, firm: Firm, lines: int) -> None:
    """What the extracts, master-data sync and posting leave in the ODS: each project with its ERP job
    and customer, and ``lines`` approved billable time entries whose timebills the ERP confirmed."""
    rng = random.Random(11)
    with psycopg.connect(dsn) as conn:
        conn.execute("TRUNCATE forecast.src_project, master.erp_record CASCADE")
        for ref, (customer, entity, currency) in sorted(firm.projects.items()):
            project(conn, ref, customer=f"psa-client-{customer}", legal_entity=entity, currency=currency)
        refs = sorted(firm.projects)
        for n in range(lines):
            ref = refs[n % len(refs)]
            _customer, entity, currency = firm.projects[ref]
            day = date(2026, 10 + n % 2, 1) + timedelta(days=rng.randrange(28))
            hours = rng.choice(["1.00", "2.00", "4.00", "7.50", "8.00"])
            entry(
                conn,
                f"te-{n}",
                ref,
                day=day,
                hours=hours,
                rate=rng.choice([12000, 15000, 17550]),
                legal_entity=entity,
                currency=currency,
            )


def test_billing_dag_bills_posted_time_once(
    airflow_db: str, clean_ods: str, erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_billing(clean_ods)
    firm = Firm(customers=3, projects=6)
    firm.seed_erp(erp_sim)
    _posted_month(clean_ods, firm, 120)
    connect_airflow(monkeypatch, clean_ods, erp=erp_sim)
    dag = _dag()
    assert [t.task_id for t in dag.tasks] == ["build_billing_events", "invoice"]
    run = dag.test(logical_date=datetime(2026, 12, 1, 7, tzinfo=UTC))
    assert run.state == "success", run.state
    figures = assert_billed_exactly_once(clean_ods)
    assert figures["events"] == 120 and figures["lines"] == 120 and figures["invoices"] > 0
    jobs = erp_sim.admin("GET", "/stats")["batch_jobs"]

    again = _dag().test(logical_date=datetime(2026, 12, 2, 7, tzinfo=UTC))
    assert again.state == "success"
    assert erp_sim.admin("GET", "/stats")["batch_jobs"] == jobs  # nothing sent again
    with psycopg.connect(clean_ods) as conn:
        assert conn.execute("SELECT count(*) FROM billing.event").fetchone() == (120,)
        assert conn.execute("SELECT DISTINCT state FROM billing.document").fetchall() == [("posted",)]
