"""The invoice status DAGs through real Airflow (``dag.test()``) against the simulators and the ODS:
the daily sweep mirrors an ERP invoice no webhook announced (and its payment) in the PSA, and the
stream DAG drains an announced one from the inbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from psa_erp_sync.clients.erp import NetSuiteClient
from psa_erp_sync.clients.psa import HarvestClient
from tests.billing.test_psa_status import erp, ods, psa, psa_invoice, put_invoice  # noqa: F401
from tests.conftest import RunningSimulator, connect_airflow
from tests.dags.test_master_data_dag import load_dag

pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.usefixtures("airflow_db")]

AS_OF = datetime(2026, 12, 6, 4, 30, tzinfo=UTC)


@pytest.fixture
def wired(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> RunningSimulator:
    """Airflow's connections point at the simulators and the clean ODS; returns the ERP simulator."""
    connect_airflow(monkeypatch, clean_ods, psa=psa_sim, erp=erp_sim)
    return erp_sim


@pytest.mark.usefixtures("erp")  # the ERP seeded with the PSA's client
def test_sweep_dag_mirrors_an_unannounced_invoice_and_its_payment(
    wired: RunningSimulator,
    ods: psycopg.Connection,  # noqa: F811
    psa: HarvestClient,  # noqa: F811
) -> None:
    erp_sim = wired
    put_invoice(erp_sim, psa, "inv-dag-1")
    erp_sim.admin("POST", "/invoices/eid:inv-dag-1/payments", json={})  # no subscription: no webhook
    dag: Any = load_dag("billing_status.py", "billing_status")
    run = dag.test(logical_date=AS_OF)
    assert run.state == "success"
    shown = psa_invoice(psa, "inv-dag-1")
    assert shown is not None and shown.state == "paid"
    assert ods.execute("SELECT swept_to, last_run_id FROM billing.psa_status_sweep").fetchone() == (
        AS_OF,
        run.run_id,
    )
    # The next day's sweep finds nothing to change.
    again = load_dag("billing_status.py", "billing_status").test(logical_date=AS_OF.replace(day=7))
    assert again.state == "success"
    assert [i.state for i in psa.iter_invoices(client_id=100)] == ["paid"]


def test_stream_dag_drains_an_announced_invoice(
    wired: RunningSimulator,
    ods: psycopg.Connection,  # noqa: F811
    psa: HarvestClient,  # noqa: F811
    erp: NetSuiteClient,  # noqa: F811
) -> None:
    put_invoice(wired, psa, "inv-dag-2")
    internal_id = erp.read_billing("invoice", "inv-dag-2").id
    ods.execute(
        "INSERT INTO inbox.event (delivery_id, source_system, event_type, source_id, occurred_at, payload)"
        " VALUES ('dag-created-1', 'erp', 'invoice.created', %s, now(), %s::jsonb)",
        (internal_id, json.dumps({"data": {"id": internal_id, "externalId": "inv-dag-2"}})),
    )
    run = load_dag("billing_status_stream.py", "billing_status_stream").test()
    assert run.state == "success"
    shown = psa_invoice(psa, "inv-dag-2")
    assert shown is not None and shown.state == "open"
    assert ods.execute("SELECT status, claimed_by, outcome FROM inbox.event").fetchone() == (
        "processed",
        run.run_id,
        "created",
    )
