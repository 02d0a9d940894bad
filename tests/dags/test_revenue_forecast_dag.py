"""The forecast DAG end to end through real Airflow (``dag.test()``), real PostgreSQL and the PSA,
CRM and planning simulators over loopback: extract -> refresh -> snapshots, planning push, chart;
a second run on unchanged inputs writes nothing new."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator, connect_airflow
from tests.forecast.conftest import TODAY, seed_posted_actuals

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

AS_OF = datetime(2026, 11, 9, 6, tzinfo=UTC)


@pytest.fixture
def wired(
    airflow_db: str,
    clean_ods: str,
    psa_sim: RunningSimulator,
    crm_sim: RunningSimulator,
    planning_sim: RunningSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    firm = generate_firm(
        FirmSpec(seed=5, consultants=15, customers=10, projects=18, opportunities=8, today=TODAY)
    )
    load_firm(firm, psa_url=psa_sim.base_url, erp_url=None, crm_url=crm_sim.base_url)
    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
    seed_posted_actuals(clean_ods, firm)
    connect_airflow(monkeypatch, clean_ods, psa=psa_sim, crm=crm_sim, planning=planning_sim)
    monkeypatch.setenv("PSA_ERP_SYNC_FORECAST_DIR", str(tmp_path))
    return {"firm": firm, "dsn": clean_ods, "planning": planning_sim, "charts": tmp_path}


def _parsed(path: str, dag_id: str) -> Any:
    """The DAG as parsed from its file (no metadata DB needed)."""
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.conftest import DAGS

    bag = DagBag(dag_folder=str(DAGS / path), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def _dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.conftest import DAGS

    bag = DagBag(dag_folder=str(DAGS / "revenue_forecast_refresh.py"), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("revenue_forecast_refresh")
    for task in dag.tasks:  # a failure should fail the test now, not after minutes of backoff
        task.retries = 0
    return dag


def test_schedule_is_assets_or_daily() -> None:
    from psa_erp_sync import assets

    dag = _parsed("revenue_forecast_refresh.py", "revenue_forecast_refresh")
    condition = dag.timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"  # any one of them triggers a run
    assert {a.uri for a in condition.objects} == {
        assets.POSTING.uri,
        assets.MASTER_DATA.uri,
        assets.PROJECT_DATA.uri,
    }
    assert dag.timetable.timetable.expression == "30 5 * * *"  # and at least daily
    assert [o.uri for o in dag.get_task("refresh_forecast").outlets] == [assets.FORECAST.uri]


def test_posting_dag_publishes_the_posting_asset() -> None:
    from psa_erp_sync import assets

    dag = _parsed("time_expense_posting.py", "time_expense_posting")
    assert [o.uri for o in dag.get_task("reconcile_erp").outlets] == [assets.POSTING.uri]


def test_forecast_dag_writes_snapshots_pushes_and_draws(wired: dict[str, Any]) -> None:
    dag = _dag()
    run = dag.test(logical_date=AS_OF)
    assert run.state == "success", run.state
    dsn = wired["dsn"]
    with psycopg.connect(dsn) as conn:
        snapshots = conn.execute(
            "SELECT scenario, snapshot_id, run_id, as_of, line_count FROM forecast.snapshot ORDER BY scenario"
        ).fetchall()
        published = conn.execute(
            "SELECT count(*) FROM forecast.publication WHERE status = 'created'"
        ).fetchone()
    assert [s[0] for s in snapshots] == ["base", "best", "worst"]
    assert {s[2] for s in snapshots} == {run.run_id}
    assert {s[3].isoformat() for s in snapshots} == {"2026-11-09"}
    assert all(s[4] > 0 for s in snapshots)
    assert published == (3,)
    assert wired["planning"].admin("GET", "/stats")["snapshots"] == 3
    base_id = snapshots[0][1]
    chart_dir = wired["charts"] / base_id
    assert (chart_dir / "forecast.html").exists() and (chart_dir / "forecast-firm.png").exists()

    # Unchanged inputs: a second run writes no new snapshot; the platform answers "unchanged".
    again = dag.test(logical_date=datetime(2026, 11, 9, 7, tzinfo=UTC))
    assert again.state == "success"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM forecast.snapshot").fetchone() == (3,)
    assert wired["planning"].admin("GET", "/stats")["puts_accepted"] == 6
