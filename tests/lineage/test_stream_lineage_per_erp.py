"""The stream DAG's declared lineage names each routed ERP's datasets (issue 15, deliverable 6).

``process_inbox`` declares its ERP outputs as :func:`psa_erp_sync.lineage.refs.routed_erp`: resolved
when lineage is asked for (never at parse time), to one dataset per ERP the routing posts to, each in
that ERP's own namespace and named by its own resources, as the batch posting task declares them.
The DAG file is loaded by a DagBag; the connections point at the real NetSuite and SAP simulators.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import RunningSimulator
from tests.two_erps import connect_two_erps

SAP_TIME = "/sap/opu/odata/sap/API_MANAGE_WORKFORCE_TIMESHEET/TimeSheetEntryCollection"


def _erp_outputs(erp_sim: RunningSimulator, sap_sim: RunningSimulator) -> set[tuple[str, str]]:
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.conftest import DAGS

    bag = DagBag(dag_folder=str(DAGS / "time_expense_stream.py"), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    task = bag.dags["time_expense_stream"].get_task("process_inbox")
    _inputs, outputs = task.lineage_datasets()
    erps = {erp_sim.base_url.rstrip("/"), sap_sim.base_url.rstrip("/")}
    return {(d.namespace, d.name) for d in outputs if d.namespace in erps}


@pytest.mark.integration
def test_the_stream_declares_every_routed_erps_datasets(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    connect_two_erps(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim, seed=False)
    # The PSA's namespace only (its inputs): the host is never called here.
    monkeypatch.setenv(
        "AIRFLOW_CONN_PSA_DEFAULT", json.dumps({"conn_type": "http", "host": "https://psa.test"})
    )
    netsuite, sap = erp_sim.base_url.rstrip("/"), sap_sim.base_url.rstrip("/")
    outputs = _erp_outputs(erp_sim, sap_sim)
    assert (netsuite, "/services/rest/record/v1/timebill") in outputs
    assert (sap, SAP_TIME) in outputs
    assert (netsuite, "/services/rest/record/v1/expensereport") in outputs
    assert (sap, "/sap/opu/odata/sap/ZPSA_JOURNALENTRY_SRV/JournalEntryCollection") in outputs
    # Each ERP's datasets in its own namespace only: no SAP entity set under NetSuite's host.
    assert all(not name.startswith("/sap/") for ns, name in outputs if ns == netsuite)
