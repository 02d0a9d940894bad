"""The project-setup DAG through real Airflow (``dag.test()``) with the CRM, ERP and PSA
simulators: a closed-won deal becomes an ERP job and a PSA project with cross-references, revenue
leakage is reported in the run output and the exception queue, a re-run creates nothing, and a run
that fails between the ERP and the PSA steps is completed by the next run without duplicates."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator, connect_airflow
from tests.dags.test_master_data_dag import load_dag, truncate_master

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

TODAY = date(2026, 11, 9)


@pytest.fixture
def wired(
    airflow_db: str,
    clean_ods: str,
    psa_sim: RunningSimulator,
    erp_sim: RunningSimulator,
    crm_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    truncate_master(clean_ods)
    firm = generate_firm(
        FirmSpec(seed=11, consultants=6, customers=12, projects=40, opportunities=3, today=TODAY)
    )
    load_firm(
        firm,
        psa_url=psa_sim.base_url,
        erp_url=erp_sim.base_url,
        crm_url=crm_sim.base_url,
        include_schedule=False,
    )
    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
    connect_airflow(monkeypatch, clean_ods, psa=psa_sim, erp=erp_sim, crm=crm_sim)
    bad = set(firm.master_dirt["erp.customer_inactive"]) | set(firm.master_dirt["erp.customer_unknown"])
    good = next(
        a for a in firm.crm["accounts"] if int(a["erp_customer_external_id"].split("-")[-1]) not in bad
    )
    return {"firm": firm, "dsn": clean_ods, "crm": crm_sim, "psa": psa_sim, "good": good}


def _close_won(world: dict[str, Any], opp_id: int) -> None:
    account = world["good"]
    world["crm"].admin(
        "POST",
        "/seed",
        json={
            "opportunities": [
                {
                    "id": opp_id,
                    "account_id": account["id"],
                    "name": f"New deal {opp_id}",
                    "stage": "Proposal",
                    "amount": "80000.00",
                    "currency": "GBP" if account["legal_entity"] == "LE-UK1" else "USD",
                    "legal_entity": account["legal_entity"],
                    "practice": "Strategy",
                    "billing_type": "fixed_fee",
                }
            ]
        },
    )
    world["crm"].admin("POST", f"/opportunities/{opp_id}/close_won", json={})


def _created(dsn: str, code: str) -> tuple[int, int, list[Any]]:
    with psycopg.connect(dsn) as conn:
        jobs = conn.execute(
            "SELECT body FROM sim_erp.record WHERE type = 'job' AND external_id = %s", (code,)
        ).fetchall()
        projects = conn.execute("SELECT id FROM sim_psa.projects WHERE code = %s", (code,)).fetchall()
    return len(jobs), len(projects), [j[0].get("custentity_psa_project_id") for j in jobs]


def _xcom(run: Any, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(
            select(XComModel.value).where(
                XComModel.run_id == run.run_id, XComModel.task_id == task_id, XComModel.key == "return_value"
            )
        )
    return value


def test_project_setup_dag_provisions_reports_leakage_and_reruns_cleanly(wired: dict[str, Any]) -> None:
    dsn = wired["dsn"]
    _close_won(wired, 7001)
    dag = load_dag("project_setup.py", "project_setup")
    first = dag.test()
    assert first.state == "success"
    jobs, projects, links = _created(dsn, "crm-opp-7001")
    with psycopg.connect(dsn) as conn:
        psa_id = conn.execute("SELECT id FROM sim_psa.projects WHERE code = 'crm-opp-7001'").fetchone()[0]
        leakage = conn.execute(
            "SELECT leaked_count, amounts FROM master.leakage_run WHERE run_id = %s", (first.run_id,)
        ).fetchone()
        open_leaks = conn.execute(
            "SELECT count(*) FROM exceptions.item WHERE kind = 'leakage' AND status = 'open'"
        ).fetchone()[0]
    assert (jobs, projects, links) == (1, 1, [str(psa_id)])
    report = _xcom(first, "reconcile_change_orders")
    report = json.loads(report) if isinstance(report, str) else report  # JSON column or text, by backend
    assert report["leaked_change_orders"] == leakage[0] == open_leaks > 0
    assert report["leaked_amount"] == leakage[1]

    second = dag.test()
    assert second.state == "success"
    assert _created(dsn, "crm-opp-7001") == (1, 1, [str(psa_id)])


def test_failure_between_erp_and_psa_is_completed_by_the_next_run(wired: dict[str, Any]) -> None:
    dsn = wired["dsn"]
    _close_won(wired, 7002)
    dag = load_dag("project_setup.py", "project_setup")
    # The PSA commits the new project but the connection drops before we hear its id.
    wired["psa"].admin(
        "PUT",
        "/faults",
        json=[
            {"id": "crash", "action": "drop_after_commit", "method": "POST", "path_regex": "^/v2/projects$"}
        ],
    )
    try:
        crashed = dag.test()
    finally:
        wired["psa"].admin("DELETE", "/faults")
    assert crashed.state == "failed"
    assert _created(dsn, "crm-opp-7002")[:2] == (1, 1)  # ERP job and (unacknowledged) PSA project exist
    with psycopg.connect(dsn) as conn:
        assert conn.execute(
            "SELECT state FROM master.project_setup WHERE opportunity_id = 7002"
        ).fetchone() == ("erp_job",)
    resumed = dag.test()
    assert resumed.state == "success"
    jobs, projects, links = _created(dsn, "crm-opp-7002")
    with psycopg.connect(dsn) as conn:
        psa_id = conn.execute("SELECT id FROM sim_psa.projects WHERE code = 'crm-opp-7002'").fetchone()[0]
        assert conn.execute(
            "SELECT state FROM master.project_setup WHERE opportunity_id = 7002"
        ).fetchone() == ("linked",)
    assert (jobs, projects, links) == (1, 1, [str(psa_id)])
