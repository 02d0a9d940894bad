"""The master-data DAG through real Airflow (``dag.test()``), the ERP and PSA simulators and the
ODS: a first full sync, ERP-owned changes carried to the PSA, an incremental re-run that finds
nothing new, and the published asset that ``project_setup`` is scheduled on."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator, connect_airflow

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

TODAY = date(2026, 11, 9)
AS_OF = datetime(2026, 11, 9, 12, tzinfo=UTC)


def truncate_master(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT 'master.' || quote_ident(tablename) FROM pg_tables WHERE schemaname = 'master'"
        )
        conn.execute("TRUNCATE " + ", ".join(r[0] for r in rows) + " RESTART IDENTITY CASCADE")


def load_dag(file: str, dag_id: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.conftest import DAGS

    bag = DagBag(dag_folder=str(DAGS / file), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    for task in dag.tasks:  # fail the test now, not after minutes of backoff
        task.retries = 0
    return dag


@pytest.fixture
def wired(
    airflow_db: str,
    clean_ods: str,
    psa_sim: RunningSimulator,
    erp_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    truncate_master(clean_ods)
    firm = generate_firm(
        FirmSpec(seed=7, consultants=6, customers=8, projects=12, opportunities=3, today=TODAY)
    )
    load_firm(firm, psa_url=psa_sim.base_url, erp_url=erp_sim.base_url, crm_url=None, include_schedule=False)
    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
    connect_airflow(monkeypatch, clean_ods, psa=psa_sim, erp=erp_sim)
    return {"firm": firm, "dsn": clean_ods, "erp": erp_sim}


def _asset_events(uri: str) -> int:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(AssetEvent)
                .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                .where(AssetModel.uri == uri)
            )
            or 0
        )


def test_master_data_sync_dag(wired: dict[str, Any]) -> None:
    from psa_erp_sync.assets import MASTER_DATA

    dsn, firm = wired["dsn"], wired["firm"]
    dag = load_dag("master_data_sync.py", "master_data_sync")
    events_before = _asset_events(MASTER_DATA.uri)
    first = dag.test(logical_date=AS_OF)
    assert first.state == "success"
    with psycopg.connect(dsn) as conn:
        held = dict(conn.execute("SELECT record_type, count(*) FROM master.erp_record GROUP BY 1").fetchall())
        pending = conn.execute("SELECT count(*) FROM master.propagation WHERE status = 'pending'").fetchone()
        inactive_psa_projects = {
            r[0] for r in conn.execute("SELECT id FROM sim_psa.projects WHERE NOT is_active")
        }
    assert held["customer"] == len(firm.erp["customers"]) and held["job"] == len(firm.erp["jobs"])
    assert held["accountingperiod"] == len(firm.erp["accounting_periods"])
    assert pending == (0,)
    # Jobs the ERP holds inactive are archived in the PSA (the ERP is the authority).
    erp_inactive_jobs = {int(j["external_id"].split("-")[-1]) for j in firm.erp["jobs"] if j["is_inactive"]}
    assert erp_inactive_jobs <= inactive_psa_projects
    assert _asset_events(MASTER_DATA.uri) == events_before + 1

    # The ERP renames a customer; the next (incremental) run carries it to the PSA, nothing else.
    customer = next(c for c in firm.erp["customers"] if not c["is_inactive"])
    wired["erp"].admin("POST", "/seed", json={"customers": [dict(customer, company_name="Renamed & Co")]})
    second = dag.test(logical_date=AS_OF + timedelta(hours=1))
    assert second.state == "success"
    with psycopg.connect(dsn) as conn:
        runs = dict(
            conn.execute(
                "SELECT endpoint, staged_new FROM staging.extract_run WHERE source_system = 'erp' AND run_key LIKE %s",
                (f"master_data_sync/{second.run_id}/%",),
            ).fetchall()
        )
        name = conn.execute(
            "SELECT name FROM sim_psa.clients WHERE id = %s", (int(customer["external_id"].split("-")[-1]),)
        ).fetchone()
    assert runs == {
        "subsidiary": 0,
        "currency": 0,
        "taxcode": 0,
        "customer": 1,
        "job": 0,
        "accountingperiod": 0,
    }
    assert name == ("Renamed & Co",)
    assert _asset_events(MASTER_DATA.uri) == events_before + 2
