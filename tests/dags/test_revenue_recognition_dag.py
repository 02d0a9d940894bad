"""The revenue recognition DAG through real Airflow (``dag.test()``) on a seeded ODS in real
PostgreSQL: the month that just ended (and the one before) recognized, stored and journaled; a
second run writes nothing new; an on-demand run of the open month by the ``period`` param."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator, connect_airflow
from tests.revenue.conftest import seed_firm
from tests.revenue.test_journal_posting import erp_periods

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


def _dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.conftest import DAGS

    bag = DagBag(dag_folder=str(DAGS / "revenue_recognition.py"), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["revenue_recognition"]
    for task in dag.tasks:  # a failure should fail the test now, not after minutes of backoff
        task.retries = 0
    return dag


def test_schedule_is_monthly() -> None:
    dag = _dag()
    assert dag.timetable.expression == "0 6 1 * *"
    assert dag.params["periods_back"] == 1


def test_dag_recognizes_the_month_that_ended(
    airflow_db: str, clean_ods: str, erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_firm(clean_ods)
    erp_periods(erp_sim)
    connect_airflow(monkeypatch, clean_ods, erp=erp_sim)
    dag = _dag()
    run = dag.test(logical_date=datetime(2026, 11, 1, 6, tzinfo=UTC))
    assert run.state == "success", run.state
    with psycopg.connect(clean_ods) as conn:
        rows = conn.execute(
            "SELECT to_char(period_month, 'YYYY-MM'), sum(period_revenue_minor), count(*)"
            " FROM revenue.recognition GROUP BY 1 ORDER BY 1"
        ).fetchall()
        # Sep: FF1 250,000 + TM1 50,000 + RET1 100,000; Oct: + MS1 100,000 and TM1 70,000.
        assert rows == [("2026-09", 400_000, 3), ("2026-10", 520_000, 4)]
        assert conn.execute("SELECT count(*), count(DISTINCT run_id) FROM revenue.journal").fetchone() == (
            7,
            1,
        )
        # ... and posted: every planned journal is an ERP journal entry, confirmed in the ledger.
        assert conn.execute(
            "SELECT count(*) FROM ledger.posting WHERE record_type = 'journalentry' AND state = 'confirmed'"
        ).fetchone() == (7,)
        assert conn.execute("SELECT count(*) FROM sim_erp.record WHERE type = 'journalentry'").fetchone() == (
            7,
        )

    again = dag.test(logical_date=datetime(2026, 11, 1, 7, tzinfo=UTC))
    assert again.state == "success"
    with psycopg.connect(clean_ods) as conn:
        assert conn.execute("SELECT count(*) FROM revenue.journal").fetchone() == (7,)
        assert conn.execute("SELECT count(*) FROM revenue.recognition").fetchone() == (7,)

    # On demand, the open month: November so far (FF1's Nov estimate; RET1's month).
    open_run = dag.test(
        logical_date=datetime(2026, 11, 20, tzinfo=UTC), run_conf={"period": "2026-11", "periods_back": 0}
    )
    assert open_run.state == "success"
    with psycopg.connect(clean_ods) as conn:
        months = conn.execute(
            "SELECT DISTINCT to_char(period_month, 'YYYY-MM') FROM revenue.journal ORDER BY 1"
        ).fetchall()
    assert months == [("2026-09",), ("2026-10",), ("2026-11",)]
