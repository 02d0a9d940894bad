"""The master-data DAG with two ERPs in force (issue 15, deliverable 6), through real Airflow
(``dag.test()``), the NetSuite, SAP and PSA simulators and the ODS, with the two-ERP routing of
``tests/two_erps.py`` (LE-UK1 moves from NetSuite to SAP company code 2010 on 2027-01-01).

- Before the cutover both ERPs are read: NetSuite's records and SAP's customers, WBS elements and
  posting periods land side by side in ``master.erp_record``; SAP's versions are held, not carried.
- After the cutover a customer renamed in SAP reaches the PSA client (``propagate_to_psa``).
- SAP down: ``sync_sap`` fails, NetSuite's tasks and ``propagate_to_psa`` still run and succeed
  (a NetSuite rename reaches the PSA), and the run fails without publishing the asset.
- ``sync_sap``'s declared inputs are SAP's entity sets in SAP's own namespace, NetSuite's tasks'
  NetSuite's records in NetSuite's; with the default routing (NetSuite only) ``sync_sap`` reads and
  declares nothing of SAP.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator, connect_airflow
from tests.dags.test_master_data_dag import load_dag, truncate_master
from tests.two_erps import COMPANY, UK, connect_two_erps

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

BEFORE = datetime(2026, 12, 15, 12, tzinfo=UTC)
AFTER = datetime(2027, 1, 4, 12, tzinfo=UTC)
SAP_MASTER = "/sap/opu/odata/sap/ZPSA_MASTERDATA_SRV"
# A NetSuite customer of an entity that stays on NetSuite (LE-US1), beside the two-ERP seeds.
US_CUSTOMER = {
    "external_id": "psa-client-2",
    "company_name": "Contoso",
    "subsidiary": "LE-US1",
    "currency": "USD",
    "is_inactive": False,
}
US_SEED = {
    "subsidiaries": [
        {"external_id": "LE-US1", "name": "US East", "country": "US", "currency": "USD", "is_inactive": False}
    ],
    "currencies": [{"symbol": "USD", "name": "USD"}],
    "customers": [US_CUSTOMER],
}


def _customer(name: str) -> dict[str, Any]:
    return {
        "Customer": "psa-client-1",
        "CompanyCode": COMPANY,
        "CustomerName": name,
        "Currency": "GBP",
        "IsBlocked": False,
    }


@pytest.fixture
def wired(
    airflow_db: str,
    clean_ods: str,
    psa_sim: RunningSimulator,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> dict[str, Any]:
    from psa_erp_sync.clients.sap import S4HanaClient

    truncate_master(clean_ods)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute("TRUNCATE routing.xref, staging.watermark")
    connect_two_erps(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim)
    connect_airflow(monkeypatch, clean_ods, psa=psa_sim, erp=erp_sim)
    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
    psa_sim.admin(
        "POST",
        "/seed",
        json={
            "clients": [
                {"id": 1, "name": "Acme Ltd", "currency": "GBP"},
                {"id": 2, "name": "Contoso", "currency": "USD"},
            ]
        },
    )
    erp_sim.admin("POST", "/seed", json=US_SEED)
    with S4HanaClient(base_url=sap_sim.base_url, user="PSA_COMM", password="secret") as sap:
        sap.upsert_master("CustomerCollection", _customer("Acme Ltd"))
        sap.upsert_master(
            "WBSElementCollection",
            {
                "WBSElement": "psa-project-42",
                "CompanyCode": COMPANY,
                "Description": "Project 42",
                "Customer": "psa-client-1",
                "Currency": "GBP",
                "IsClosed": False,
            },
        )
    return {"dsn": clean_ods, "erp": erp_sim, "sap": sap_sim, "psa": psa_sim}


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def _psa_client_name(dsn: str, client_id: int) -> str:
    with psycopg.connect(dsn) as conn:
        return str(conn.execute("SELECT name FROM sim_psa.clients WHERE id = %s", (client_id,)).fetchone()[0])


def test_master_data_sync_reads_both_erps(wired: dict[str, Any]) -> None:
    from psa_erp_sync.clients.sap import S4HanaClient

    dsn, sap_sim = wired["dsn"], wired["sap"]
    dag = load_dag("master_data_sync.py", "master_data_sync")
    first = dag.test(logical_date=BEFORE)
    assert first.state == "success", _states(first)
    with psycopg.connect(dsn) as conn:
        held = dict(
            conn.execute(
                "SELECT erp || ':' || record_type, count(*) FROM master.erp_record GROUP BY 1"
            ).fetchall()
        )
        sap_result = conn.execute("SELECT count(*) FROM master.propagation WHERE erp = 'sap'").fetchone()
    assert held["netsuite:customer"] == 2 and held["netsuite:job"] == 1
    assert held["sap:sap_customer"] == 1 and held["sap:sap_wbs_element"] == 1
    assert held["sap:sap_posting_period"] == 24  # 2026 and 2027 of company code 2010
    assert sap_result == (0,)  # before the cutover NetSuite speaks for LE-UK1

    with S4HanaClient(base_url=sap_sim.base_url, user="PSA_COMM", password="secret") as sap:
        sap.upsert_master("CustomerCollection", _customer("Acme Holdings (SAP)"))
    second = dag.test(logical_date=AFTER)
    assert second.state == "success", _states(second)
    assert _psa_client_name(dsn, 1) == "Acme Holdings (SAP)"

    # SAP down: NetSuite's result is not hidden; the run fails and publishes nothing.
    renamed = dict(US_CUSTOMER, company_name="Contoso (NetSuite rename)")
    wired["erp"].admin("POST", "/seed", json={"customers": [renamed]})
    sap_sim.admin(
        "PUT",
        "/faults",
        json=[{"id": "down", "action": "status", "status": 401, "path_regex": "ZPSA_MASTERDATA_SRV"}],
    )
    try:
        third = dag.test(logical_date=datetime(2027, 1, 4, 13, tzinfo=UTC))
    finally:
        sap_sim.admin("DELETE", "/faults")
    states = _states(third)
    assert third.state == "failed", states
    assert states["sync_sap"] == "failed"
    assert states["sync_customer"] == states["sync_currencyrate"] == "success"
    assert states["propagate_to_psa"] == "success"
    assert states["publish_master_data"] == "upstream_failed"
    assert _psa_client_name(dsn, 2) == "Contoso (NetSuite rename)"


def _erp_inputs(task: Any, *namespaces: str) -> set[tuple[str, str]]:
    inputs, _ = task.lineage_datasets()
    return {(d.namespace, d.name) for d in inputs if d.namespace in namespaces}


def test_sync_sap_declares_sap_datasets_in_sap_namespace_while_sap_is_in_force(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    connect_airflow(monkeypatch, clean_ods, erp=erp_sim)
    monkeypatch.setenv(
        "AIRFLOW_CONN_SAP_DEFAULT", json.dumps({"conn_type": "http", "host": sap_sim.base_url})
    )
    netsuite, sap = erp_sim.base_url, sap_sim.base_url
    dag = load_dag("master_data_sync.py", "master_data_sync")
    # The default routing file: NetSuite only. sync_sap declares no ERP dataset.
    assert _erp_inputs(dag.get_task("sync_sap"), netsuite, sap) == set()

    connect_two_erps(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim, seed=False)
    assert _erp_inputs(dag.get_task("sync_sap"), netsuite, sap) == {
        (sap, f"{SAP_MASTER}/CustomerCollection"),
        (sap, f"{SAP_MASTER}/WBSElementCollection"),
        (sap, "/sap/opu/odata/sap/ZPSA_JOURNALENTRY_SRV/PostingPeriodCollection"),
    }
    assert _erp_inputs(dag.get_task("sync_customer"), netsuite, sap) == {
        (netsuite, "/services/rest/record/v1/customer")
    }
    assert UK  # the entity the routing moves
