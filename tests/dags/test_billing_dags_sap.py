"""The billing DAGs through real Airflow (``dag.test()``) with LE-UK1 moving from NetSuite to SAP on
2027-01-01 (tests/two_erps.py): ``billing`` invoices December's posted time in NetSuite and
January's in SAP; a second run sends nothing; ``billing_readback`` reads both ERPs into the ODS;
``billing_status`` marks the PSA invoice of the SAP invoice paid once SAP cleared it with a payment."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest

from tests import two_erps
from tests.billing.conftest import entry, project
from tests.billing.invoicing import clean_billing
from tests.billing.test_sap_billing import CUSTOMER, NETSUITE_MORE, pay_in_sap, sap_documents
from tests.conftest import RunningSimulator, connect_airflow
from tests.dags.test_master_data_dag import load_dag

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

UK, COMPANY = two_erps.UK, two_erps.COMPANY


def test_billing_dags_invoice_read_back_and_mirror_per_erp(
    airflow_db: str,
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    psa_sim: RunningSimulator,
    psa_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    from psa_erp_sync.clients.sap import S4HanaClient
    from simulators.psa import sample

    two_erps.connect_two_erps(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim)
    connect_airflow(monkeypatch, clean_ods, erp=erp_sim, psa=psa_sim)
    erp_sim.admin("POST", "/seed", json=NETSUITE_MORE)
    psa_sim.admin("POST", "/seed", json=sample.build())
    clean_billing(clean_ods)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute("TRUNCATE forecast.src_project, master.erp_record CASCADE")
        conn.execute("TRUNCATE billing.psa_invoice, billing.psa_status_sweep")
        project(conn, "900", customer=CUSTOMER, legal_entity=UK, currency="GBP")
        # PSA sample time entries 10002 and 10000 (client 100), posted in December and January.
        entry(
            conn,
            "10002",
            "900",
            day=date(2026, 12, 15),
            hours="2.00",
            rate=10_000,
            legal_entity=UK,
            currency="GBP",
        )
        entry(
            conn,
            "10000",
            "900",
            day=date(2027, 1, 5),
            hours="3.50",
            rate=10_000,
            legal_entity=UK,
            currency="GBP",
        )
    with S4HanaClient(base_url=sap_sim.base_url, user="PSA_COMM", password="secret") as sap:
        sap.upsert_master(
            "CustomerCollection",
            {"Customer": CUSTOMER, "CompanyCode": COMPANY, "CustomerName": "Client 0", "Currency": "GBP"},
        )

        run = load_dag("billing.py", "billing").test(logical_date=datetime(2027, 2, 1, 7, tzinfo=UTC))
        assert run.state == "success"
        with psycopg.connect(clean_ods) as conn:
            routed = conn.execute(
                "SELECT p.target_erp, d.doc_date, d.total_minor, d.state FROM billing.document d"
                " JOIN ledger.posting p ON p.idempotency_key = d.idempotency_key ORDER BY d.doc_date"
            ).fetchall()
        assert routed == [
            ("netsuite", date(2026, 12, 15), 20_000, "posted"),
            ("sap", date(2027, 1, 5), 35_000, "posted"),
        ]
        [doc] = sap_documents(clean_ods)
        again = load_dag("billing.py", "billing").test(logical_date=datetime(2027, 2, 2, 7, tzinfo=UTC))
        assert again.state == "success" and len(sap_documents(clean_ods)) == 1

        pay_in_sap(sap, doc["accounting_document"])

    readback = load_dag("billing_readback.py", "billing_readback").test(
        logical_date=datetime(2027, 2, 2, 8, tzinfo=UTC)
    )
    assert readback.state == "success"
    with psycopg.connect(clean_ods) as conn:
        held = conn.execute(
            "SELECT erp, record_type, total_minor, status FROM billing.erp_invoice ORDER BY erp"
        ).fetchall()
        payments = conn.execute("SELECT erp, payment_minor FROM billing.erp_payment").fetchall()
    assert held == [("netsuite", "invoice", 20_000, "Open"), ("sap", "invoice", 35_000, "Paid In Full")]
    assert payments == [("sap", 35_000)]

    status = load_dag("billing_status.py", "billing_status").test(
        logical_date=datetime(2027, 2, 2, 9, tzinfo=UTC)
    )
    assert status.state == "success"
    shown = psa_client.find_invoice(doc["accounting_document"], client_id=100)
    assert shown is not None and shown.state == "paid"
    assert psa_client.get_time_entry(10000)["is_billed"] is True
