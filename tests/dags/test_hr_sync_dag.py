"""The hr_sync DAG through real Airflow (``dag.test()``), the Workday, PSA and ERP simulators and
the ODS: workers paged from Workday (page size 100 of a list Workday throttles), a termination that
deactivates the PSA user and the ERP employee, a future hire left for its date, and a PSA edit of an
HR-owned field overwritten on the next run and reported with its owner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import RunningSimulator, connect_airflow
from tests.dags.test_master_data_dag import load_dag
from tests.hr.conftest import FUTURE_HIRE, FUTURE_RATE, USERS

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

AS_OF = datetime(2026, 11, 9, 12, tzinfo=UTC)


@pytest.fixture
def wired(
    airflow_db: str,
    clean_ods: str,
    psa_sim: RunningSimulator,
    erp_sim: RunningSimulator,
    workday_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    from simulators.workday.sample import from_psa_users

    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute("TRUNCATE hr.worker_version, hr.worker, hr.cost_rate")
    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
    psa_sim.admin("POST", "/seed", json={"users": USERS})
    seeded = from_psa_users(USERS)
    seeded["workers"].append(FUTURE_HIRE)
    seeded["cost_rates"].append(FUTURE_RATE)
    for worker in seeded["workers"]:
        if worker["employee_id"] == "E201":
            worker["termination_date"] = "2026-11-01"
    workday_sim.admin("POST", "/seed", json=seeded)
    erp_sim.admin(
        "POST",
        "/seed",
        json={
            "currencies": [{"external_id": c, "symbol": c, "name": c} for c in ("USD", "GBP")],
            "subsidiaries": [
                {"external_id": le, "name": le, "country": country, "currency": currency}
                for le, country, currency in (
                    ("LE-US1", "US", "USD"),
                    ("LE-US2", "US", "USD"),
                    ("LE-UK1", "GB", "GBP"),
                )
            ],
        },
    )
    # One 429 storm on the workers list: the client waits Retry-After and carries on.
    workday_sim.admin(
        "POST",
        "/faults",
        json={
            "id": "storm",
            "action": "throttle",
            "path_regex": "/workers$",
            "max_hits": 1,
            "retry_after": 0,
        },
    )
    connect_airflow(monkeypatch, clean_ods, psa=psa_sim, erp=erp_sim, workday=workday_sim)
    return {"dsn": clean_ods, "psa": psa_sim, "erp": erp_sim, "workday": workday_sim}


def test_hr_sync_dag(wired: dict[str, Any]) -> None:
    dsn = wired["dsn"]
    dag = load_dag("hr_sync.py", "hr_sync")
    first = dag.test(logical_date=AS_OF)
    assert first.state == "success"
    with psycopg.connect(dsn) as conn:
        workers = conn.execute("SELECT count(*), count(psa_user_id) FROM hr.worker").fetchone()
        rates = conn.execute("SELECT count(*) FROM hr.cost_rate").fetchone()
        active = dict(conn.execute("SELECT id, is_active FROM sim_psa.users").fetchall())
        employee = conn.execute(
            "SELECT is_inactive FROM sim_erp.record WHERE type = 'employee' AND external_id = 'psa-user-201'"
        ).fetchone()
    assert workers == (4, 3)  # the future hire has no PSA user yet
    assert rates == (7,)
    assert active == {201: False, 202: True, 203: False}  # E201 terminated on Nov 1
    assert employee == (True,)
    assert wired["workday"].admin("GET", "/stats")["throttled"] == 0  # the fault rule answered the 429
    assert wired["workday"].admin("GET", "/faults")["rules"][0]["hits"] == 1

    # Someone changes an HR-owned field in the PSA; the next run puts HR's value back and reports it.
    response = httpx.patch(
        f"{wired['psa'].base_url}/v2/users/202",
        json={"legal_entity": "LE-UK1"},
        headers={"Authorization": "Bearer t", "Harvest-Account-Id": "1", "User-Agent": "test"},
    )
    assert response.status_code == 200
    second = dag.test(logical_date=AS_OF + timedelta(days=1))
    assert second.state == "success"
    with psycopg.connect(dsn) as conn:
        le = conn.execute("SELECT legal_entity FROM sim_psa.users WHERE id = 202").fetchone()
        items = conn.execute(
            "SELECT kind, reason_code, owner, detail->'fields' FROM exceptions.item WHERE status = 'open'"
        ).fetchall()
    assert le == ("LE-US1",)
    assert items == [("propagation", "HR_FIELD_EDITED_IN_PSA", "people-operations", ["legal_entity"])]
