"""Issue 13 item 1 as a new user meets it, through real Airflow (``dag.test()``), real PostgreSQL
and the PSA and ERP simulators: the first run finds a PSA with no records on any endpoint, the
next finds a month of them and posts it, and a later edit of a posted entry still reaches the ERP.
Before the fix the empty run stored '-infinity' watermarks and every later run failed in
extract_time_entries / extract_expenses."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from tests.conftest import RunningSimulator, connect_airflow
from tests.dags.test_time_expense_dag import _dag, _erp_timebills

pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.slow]

TODAY = date(2026, 11, 9)
# Not the DAG tests' 12:00 (tests/dags/test_time_expense_dag.py): this file's runs must not replace
# another file's run of the same logical date in a worker's shared Airflow database.
AS_OF = datetime(2026, 11, 9, 12, 11, tzinfo=UTC)


def test_an_empty_first_run_never_stops_the_month(
    airflow_db: str,
    clean_ods: str,
    psa_sim: RunningSimulator,
    erp_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    firm = generate_firm(
        FirmSpec(seed=11, consultants=6, customers=5, projects=6, opportunities=2, today=TODAY)
    )
    load_firm(firm, psa_url=None, erp_url=erp_sim.base_url, crm_url=None)  # the PSA stays empty
    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
    connect_airflow(monkeypatch, clean_ods, psa=psa_sim, erp=erp_sim)
    dag = _dag()

    first = dag.test(logical_date=AS_OF)
    assert first.state == "success"
    with psycopg.connect(clean_ods) as conn:
        stored = conn.execute("SELECT endpoint, high_watermark::text FROM staging.watermark").fetchall()
    assert all(mark != "-infinity" for _, mark in stored), stored

    load_firm(firm, psa_url=psa_sim.base_url, erp_url=None, crm_url=None, include_schedule=False)
    second = dag.test(logical_date=AS_OF + timedelta(hours=1))
    assert second.state == "success"
    posted = _erp_timebills(clean_ods)
    assert posted, "the second run should post the month"
    with psycopg.connect(clean_ods) as conn:
        expenses = conn.execute("SELECT count(*) FROM sim_erp.record WHERE type = 'expensereport'").fetchone()
    assert expenses is not None and expenses[0] > 0

    external_id = sorted(posted)[0]
    entry_id = int(external_id.removeprefix("psa-te-"))
    new_hours = "1.5" if float(posted[external_id]["hours"]) != 1.5 else "2.5"
    psa_sim.admin("PATCH", f"/time_entries/{entry_id}", json={"hours": float(new_hours)})
    third = dag.test(logical_date=AS_OF + timedelta(hours=2), run_conf={"mode": "incremental"})
    assert third.state == "success"
    assert float(_erp_timebills(clean_ods)[external_id]["hours"]) == float(new_hours)
