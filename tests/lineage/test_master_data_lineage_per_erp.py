"""ERP validation's and master_data_sync's declared OpenLineage inputs per ERP (issue 15, deliverable 6).

The two-ERP routing of ``tests/two_erps.py`` (LE-UK1 on SAP company code 2010 from 2027-01-01),
the NetSuite and SAP simulators over loopback. ``ERPValidationOperator`` declares, before it runs,
the datasets of every ERP in force, and after it ran those of the ERPs it looked up, each in that
ERP's own namespace (SAP: its master-data entity sets under ``http://host:port`` of the SAP
connection). Then a two-task DAG (the validation and master_data_sync's ``sync_sap``) runs with
``airflow dags test`` and the OpenLineage file transport: the COMPLETE events carry both ERPs'
namespaces (validation) and SAP's entity sets (``sync_sap``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningSimulator
from tests.lineage.file_transport import dags_test_events
from tests.two_erps import COMPANY, UK, connect_two_erps

pytestmark = pytest.mark.integration

SAP_MASTER = "/sap/opu/odata/sap/ZPSA_MASTERDATA_SRV"
SAP_INPUTS = {f"{SAP_MASTER}/CustomerCollection", f"{SAP_MASTER}/WBSElementCollection"}
NETSUITE_INPUTS = {
    f"/services/rest/record/v1/{t}" for t in ("customer", "subsidiary", "currency", "taxcode", "job")
}
US = {"key": "opp-1", "customer": "psa-client-5", "legal_entity": "LE-US1", "currency": "USD"}
UK_DEAL = {"key": "opp-2", "customer": "psa-client-1", "legal_entity": UK, "currency": "GBP"}


def _inputs(op: Any) -> dict[str, set[str]]:
    inputs, _ = op.lineage_datasets()
    out: dict[str, set[str]] = {}
    for d in inputs:
        out.setdefault(d.namespace, set()).add(d.name)
    return out


@pytest.fixture
def two_erps(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> dict[str, str]:
    from psa_erp_sync.clients.sap import S4HanaClient

    connect_two_erps(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim)
    with S4HanaClient(base_url=sap_sim.base_url, user="PSA_COMM", password="secret") as sap:
        sap.upsert_master(
            "CustomerCollection",
            {
                "Customer": "psa-client-1",
                "CompanyCode": COMPANY,
                "CustomerName": "Acme Ltd",
                "Currency": "GBP",
            },
        )
    return {"netsuite": erp_sim.base_url, "sap": sap_sim.base_url}


def _validate(records: list[dict[str, Any]]) -> Any:
    from psa_erp_sync.operators.erp_validation import ERPValidationOperator

    op = ERPValidationOperator(
        task_id="validate",
        records=records,
        domain="project_setup",
        record_type="opportunity",
        source_system="crm",
    )
    before = _inputs(op)
    context = {"run_id": "t", "ti": None, "data_interval_end": datetime(2027, 1, 4, 12, tzinfo=UTC)}
    op.execute(context)  # type: ignore[arg-type]  # a plain dict for Airflow's Context: execute outside a task run
    return before, _inputs(op)


def test_validation_declares_each_erps_datasets_in_its_own_namespace(two_erps: dict[str, str]) -> None:
    netsuite, sap = two_erps["netsuite"], two_erps["sap"]
    before, after = _validate([US, UK_DEAL])
    # Before it runs: every ERP in force.
    assert before == {netsuite: NETSUITE_INPUTS, sap: SAP_INPUTS}
    # After: the ERPs it looked up (LE-US1 in NetSuite, LE-UK1 in SAP on 2027-01-04).
    assert after == {netsuite: NETSUITE_INPUTS, sap: SAP_INPUTS}
    _, sap_only = _validate([UK_DEAL])
    assert sap_only == {sap: SAP_INPUTS}


def test_validation_with_netsuite_alone_declares_netsuite_only(
    clean_ods: str, erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import connect_airflow

    connect_airflow(monkeypatch, clean_ods, erp=erp_sim)  # the default routing file: NetSuite only
    before, after = _validate([US])
    assert before == after == {erp_sim.base_url: NETSUITE_INPUTS}


DAG_ID = "master_data_lineage"
DAG_FILE = f'''
from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import DAG

from psa_erp_sync.lineage.refs import erp_in_force, ods
from psa_erp_sync.masterdata import steps
from psa_erp_sync.operators.erp_validation import ERPValidationOperator
from psa_erp_sync.operators.step import DomainStepOperator

with DAG("{DAG_ID}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False):
    ERPValidationOperator(
        task_id="validate",
        records={json.dumps([US, UK_DEAL])},
        domain="project_setup",
        record_type="opportunity",
        source_system="crm",
    )
    DomainStepOperator(
        task_id="sync_sap",
        call=steps.sync_sap_step,
        inputs=[erp_in_force("sap", t) for t in ("customer", "job", "accountingperiod")],
        outputs=[ods("master.erp_record")],
    )
'''


@pytest.mark.airflow
def test_emitted_events_carry_both_namespaces(
    airflow_db: str, two_erps: dict[str, str], tmp_path: Path
) -> None:
    events = dags_test_events(tmp_path, DAG_ID, DAG_FILE, "2027-01-04T12:00:00+00:00")

    def inputs_of(task: str) -> dict[str, set[str]]:
        [complete] = [
            e for e in events if e["job"]["name"] == f"{DAG_ID}.{task}" and e["eventType"] == "COMPLETE"
        ]
        out: dict[str, set[str]] = {}
        for d in complete["inputs"]:
            out.setdefault(d["namespace"], set()).add(d["name"])
        return out

    netsuite, sap = two_erps["netsuite"], two_erps["sap"]
    assert inputs_of("validate") == {netsuite: NETSUITE_INPUTS, sap: SAP_INPUTS}
    assert inputs_of("sync_sap") == {
        sap: {*SAP_INPUTS, "/sap/opu/odata/sap/ZPSA_JOURNALENTRY_SRV/PostingPeriodCollection"}
    }
