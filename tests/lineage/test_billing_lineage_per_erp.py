"""The billing tasks' declared OpenLineage datasets per ERP in force (issue 15, docs/billing.md
"Billing on SAP", "Lineage").

The real DAGs (``dags/billing.py``, ``dags/billing_readback.py``, ``dags/billing_status.py``) are
parsed while the routing in force is NetSuite only; their tasks then declare NetSuite's datasets
only. The same parsed tasks, asked again once the two-ERP routing of ``tests/two_erps.py`` is in
force (LE-UK1 on SAP company code 2010 from 2027-01-01), declare SAP's too, in SAP's namespace
(``http://host:port`` of the SAP connection): the invoicing task's outputs SAP's journal entries
(customer documents), its inputs SAP's posting periods; the read-back of invoices, credit memos and
payments and the status sweep read SAP's journal entries. Nothing is resolved at parse time.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from tests.conftest import RunningSimulator, connect_airflow
from tests.two_erps import connect_two_erps

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

SAP_JOURNAL = "/sap/opu/odata/sap/ZPSA_JOURNALENTRY_SRV/JournalEntryCollection"
SAP_PERIODS = "/sap/opu/odata/sap/ZPSA_JOURNALENTRY_SRV/PostingPeriodCollection"
NS = "/services/rest/record/v1/"


def _by_namespace(datasets: list[Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for d in datasets:
        if not d.namespace.startswith("postgres://"):
            out.setdefault(d.namespace, []).append(d.name)
    return out


def _declared(tasks: dict[str, Any]) -> dict[str, tuple[dict[str, list[str]], dict[str, list[str]]]]:
    out = {}
    for task_id, task in tasks.items():
        inputs, outputs = task.lineage_datasets()
        out[task_id] = (_by_namespace(inputs), _by_namespace(outputs))
    return out


def test_billing_tasks_declare_each_erp_in_force_in_its_own_namespace(
    airflow_db: str,
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from tests.dags.test_master_data_dag import load_dag

    psa = cast(RunningSimulator, SimpleNamespace(base_url="http://127.0.0.1:18082"))  # named, never called
    connect_airflow(monkeypatch, clean_ods, erp=erp_sim, psa=psa)  # the default routing file: NetSuite only
    tasks = {
        "invoicing": load_dag("billing.py", "billing").get_task("invoice"),
        **{
            t: load_dag("billing_readback.py", "billing_readback").get_task(f"read_back_{t}")
            for t in ("invoice", "creditmemo", "customerpayment", "journalentry")
        },
        "status": load_dag("billing_status.py", "billing_status").get_task("sweep_invoice_status"),
    }
    netsuite, sap = erp_sim.base_url, sap_sim.base_url
    alone = _declared(tasks)
    assert all(sap not in i and sap not in o for i, o in alone.values()), alone
    assert alone["invoicing"] == (
        {netsuite: [NS + "accountingperiod"]},
        {netsuite: [NS + "invoice", NS + "creditmemo"]},
    )

    connect_two_erps(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim, seed=False)
    both = _declared(tasks)  # the same parsed tasks: resolved now
    invoice_in, invoice_out = both["invoicing"]
    assert invoice_out == {netsuite: [NS + "invoice", NS + "creditmemo"], sap: [SAP_JOURNAL]}
    assert invoice_in == {netsuite: [NS + "accountingperiod"], sap: [SAP_PERIODS]}
    for record_type in ("invoice", "creditmemo", "customerpayment"):
        inputs, outputs = both[record_type]
        assert inputs == {netsuite: [NS + record_type, NS + "transactionline"], sap: [SAP_JOURNAL]}
        assert outputs == {}  # ODS tables only
    assert both["journalentry"] == alone["journalentry"]  # SAP's journal entries are not read back here
    status_in, _ = both["status"]
    assert status_in[sap] == [SAP_JOURNAL] and status_in[netsuite] == [NS + "invoice", NS + "customerpayment"]
