"""The billing path of the lineage graph: canonical time entry -> ``billing.event`` -> ERP invoice ->
ERP revenue journal (through the read-back and the recognition) -> forecast snapshot, and the
``invoiceTotals`` run facet of the invoice task.

The events are built in this process from the real DAGs (``dags/billing.py``,
``dags/billing_readback.py``, ``dags/revenue_recognition.py``, ``dags/revenue_forecast_refresh.py``):
each task's ``get_openlineage_facets_on_complete`` (what the provider calls) becomes a COMPLETE
event, so the test takes seconds. ``test_emitted_events.py`` covers what ``airflow dags test``
emits through the provider for the time path. The invoice facet comes from a real invoicing pass
against the ERP simulator over loopback, and is validated against its own schema and the spec.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import psycopg
import pytest

from tests.billing.invoicing import Firm, clean_billing, correct, insert_events, run_pass
from tests.conftest import RunningSimulator, connect_airflow

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

NAMESPACE = "psa-erp-sync-ci"
DAG_FILES = {
    "billing": "billing.py",
    "billing_readback": "billing_readback.py",
    "revenue_recognition": "revenue_recognition.py",
    "revenue_forecast_refresh": "revenue_forecast_refresh.py",
}
ERP = "/services/rest/record/v1/"


def _event(job: str, lineage: Any) -> dict[str, Any]:
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.serde import Serde

    event = RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=datetime.now(UTC).isoformat(),
        run=Run(runId=str(uuid.uuid4()), facets=lineage.run_facets),
        job=Job(namespace=NAMESPACE, name=job),
        producer="https://github.com/apache/airflow/tree/providers-openlineage",
        inputs=lineage.inputs,
        outputs=lineage.outputs,
    )
    return cast(dict[str, Any], json.loads(json.dumps(Serde.to_dict(event))))


def _dag_events(totals: dict[str, Any]) -> list[dict[str, Any]]:
    from tests.dags.test_master_data_dag import load_dag

    events = []
    for dag_id, file in DAG_FILES.items():
        for task in load_dag(file, dag_id).tasks:
            if task.task_id == "invoice":
                task.totals = totals  # what execute() keeps for the facet
            lineage = task.get_openlineage_facets_on_complete(None)
            events.append(_event(f"{dag_id}.{task.task_id}", lineage))
    return events


@pytest.fixture
def invoiced(clean_ods: str, erp_sim: RunningSimulator) -> dict[str, Any]:
    """A real invoicing pass: 24 lines over 3 customers, then one line corrected (a credit memo)."""
    clean_billing(clean_ods)
    firm = Firm(customers=3, projects=4)
    firm.seed_erp(erp_sim)
    insert_events(clean_ods, firm.events(24))
    first = run_pass(clean_ods, erp_sim, "lineage-1")
    with psycopg.connect(clean_ods) as conn:
        row = conn.execute("SELECT event_ref FROM billing.event ORDER BY event_ref LIMIT 1").fetchone()
    assert row is not None
    correct(clean_ods, row[0], 4242)
    second = run_pass(clean_ods, erp_sim, "lineage-2")
    return {"first": first, "second": second, "dsn": clean_ods}


def _check_invoice_totals(invoiced: dict[str, Any]) -> None:
    """The facet of each pass matches the documents that pass planned."""
    from psa_erp_sync.lineage.facets import InvoiceTotalsRunFacet

    first, second = invoiced["first"], invoiced["second"]
    with psycopg.connect(invoiced["dsn"]) as conn:
        expected = {
            run: {
                (t, c.strip()): (int(n), int(lines), int(total))
                for t, c, n, lines, total in conn.execute(
                    "SELECT doc_type, currency, count(*), sum(line_count), sum(total_minor) FROM billing.document"
                    " WHERE run_id = %s GROUP BY 1, 2",
                    (run,),
                )
            }
            for run in ("lineage-1", "lineage-2")
        }
    one = InvoiceTotalsRunFacet.from_totals(first.totals)
    assert one.invoices == sum(n for (t, _), (n, _, _) in expected["lineage-1"].items() if t == "invoice") > 0
    assert one.invoiceLines == 24 and one.creditMemos == 0 and one.creditMemoLines == 0
    assert {c: int(v["invoiced"]) for c, v in one.totals.items()} == {
        c: total for (_, c), (_, _, total) in expected["lineage-1"].items()
    }
    assert one.documentsByState == {"posted": one.invoices}
    two = InvoiceTotalsRunFacet.from_totals(second.totals)
    assert (two.invoices, two.invoiceLines, two.creditMemos, two.creditMemoLines) == (1, 1, 1, 1)
    (memo,) = [(c, total) for (t, c), (_, _, total) in expected["lineage-2"].items() if t == "creditmemo"]
    assert int(two.totals[memo[0]]["credited"]) == memo[1] > 0
    net = sum(int(v["net"]) for v in two.totals.values())
    assert net == sum(
        total * (1 if t == "invoice" else -1) for (t, _), (_, _, total) in expected["lineage-2"].items()
    )


def test_invoice_totals_facet_and_the_billing_path_in_the_graph(
    invoiced: dict[str, Any], airflow_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from devtools.lineage_graph import (
        TIME_TO_FORECAST_VIA_BILLING,
        LineageGraph,
        SpecValidator,
        analyse,
        dataset_named,
    )
    from psa_erp_sync.flows.billing import event_lineage
    from psa_erp_sync.lineage.refs import resolve

    _check_invoice_totals(invoiced)

    def stand_in(port: int) -> RunningSimulator:
        return cast(RunningSimulator, SimpleNamespace(base_url=f"http://127.0.0.1:{port}"))

    connect_airflow(
        monkeypatch,
        invoiced["dsn"],
        psa=stand_in(18082),
        crm=stand_in(18083),
        erp=stand_in(18080),
        planning=stand_in(18081),
    )
    events = _dag_events(invoiced["first"].totals)
    # The events builder goes in front of `invoice`, declaring event_lineage(). Until it is a task
    # of the billing DAG, one event from the declared datasets stands in for it, named as such.
    builders = [
        e["job"]["name"]
        for e in events
        if e["job"]["name"].startswith("billing.")
        and e["job"]["name"] != "billing.invoice"
        and any(o["name"].endswith(".billing.event") for o in e.get("outputs") or [])
    ]
    if not builders:
        from airflow.providers.openlineage.extractors import OperatorLineage

        inputs, outputs = event_lineage()
        declared = OperatorLineage(inputs=resolve(inputs), outputs=resolve(outputs))
        events.append(_event("billing.events (declared)", declared))
        builders = ["billing.events (declared)"]

    try:
        validator = SpecValidator()
    except FileNotFoundError as exc:  # no ../shared beside this checkout
        pytest.skip(f"the OpenLineage spec is not beside the checkout: {exc}")
    report = validator.validate(events)
    assert report.errors == []
    assert report.facets_by_schema.get("invoiceTotals") == 1, report.as_dict()
    (invoice,) = [e for e in events if e["job"]["name"] == "billing.invoice"]
    facet = invoice["run"]["facets"]["invoiceTotals"]
    assert facet["_schemaURL"].endswith("InvoiceTotalsRunFacet.json#/$defs/InvoiceTotalsRunFacet")
    assert facet["_producer"] and facet["invoiceLines"] == 24

    graph = LineageGraph.from_events(events)
    path = graph.path_through([dataset_named(w) for w in TIME_TO_FORECAST_VIA_BILLING])
    assert path is not None, graph.as_dict()
    jobs = [n[2] for n in path if n[0] == "job"]
    datasets = [n[2] for n in path if n[0] == "dataset"]
    assert jobs == [
        builders[0],
        "billing.invoice",
        "billing_readback.read_back_invoice",
        "revenue_recognition.recognize_revenue",
        "revenue_recognition.post_journals",
        "revenue_forecast_refresh.refresh_forecast",
    ], path
    assert datasets[0].endswith(".canonical.time_entry") and datasets[1].endswith(".billing.event")
    assert datasets[2] == f"{ERP}invoice" and datasets[3].endswith(".billing.erp_invoice")
    assert datasets[4].endswith(".revenue.journal") and datasets[5] == f"{ERP}journalentry"
    assert datasets[-1].endswith(".forecast.snapshot")
    erp_namespaces = {n[1] for n in path if n[2].startswith(ERP)}
    assert erp_namespaces == {"http://127.0.0.1:18080"}  # the ERP's namespace, one system

    events_path = tmp_path / "events.jsonl"
    events_path.write_text("".join(json.dumps(e) + "\n" for e in events))
    summary = analyse(events_path)
    assert summary["paths"]["billing"] is not None
