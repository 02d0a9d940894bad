"""The SAP simulator's customer documents (docs/simulators.md, "Customer invoices, credit memos and
payments"): a customer item must name a customer of the company code, a customer document needs
one, a partial payment leaves the invoice open for the rest, the payment that covers it clears it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration

COMPANY = "2010"


@pytest.fixture
def sap(sap_sim: RunningSimulator) -> Iterator[Any]:
    from psa_erp_sync.clients.sap import S4HanaClient

    sap_sim.admin("POST", "/reset")
    sap_sim.admin(
        "POST",
        "/seed",
        json={
            "company_codes": [{"company_code": COMPANY, "currency": "GBP"}],
            "posting_periods": [{"company_code": COMPANY, "fiscal_year": 2027, "period": 1, "open": True}],
        },
    )
    with S4HanaClient(base_url=sap_sim.base_url, user="PSA_COMM", password="secret") as client:
        client.upsert_master(
            "CustomerCollection",
            {"Customer": "C1", "CompanyCode": COMPANY, "CustomerName": "One", "Currency": "GBP"},
        )
        yield client


def _invoice(customer: str, amount: str, *, doc_type: str = "DR") -> Any:
    from psa_erp_sync.billing.sap import CustomerDocumentInput, CustomerItemInput

    day = date(2027, 1, 5)
    return CustomerDocumentInput(
        company_code=COMPANY,
        document_type=doc_type,
        document_date=day,
        posting_date=day,
        currency="GBP",
        items=(
            CustomerItemInput(gl_account="1200", amount=Decimal(amount), debit_credit="S", customer=customer),
            CustomerItemInput(gl_account="4000", amount=Decimal(amount), debit_credit="H"),
        ),
    )


def _open(client: Any, document: str) -> tuple[str, str]:
    [row] = client.journal_entry_rows(
        {
            "$filter": f"CompanyCode eq '{COMPANY}' and AccountingDocument eq '{document}'",
            "$expand": "to_Item",
        }
    )
    item = row["to_Item"]["results"][0]
    return item["OpenAmountInTransactionCurrency"], item["ClearingAccountingDocument"]


def test_customer_items_open_amounts_and_clearing(sap: Any, sap_sim: RunningSimulator) -> None:
    from psa_erp_sync.clients.sap import SapRejected

    with pytest.raises(SapRejected) as unknown:
        sap.post_journal_entry(_invoice("NOPE", "10.00"), idempotency_key="k-unknown")
    assert unknown.value.code == "F5/351"
    invoice = sap.post_journal_entry(_invoice("C1", "100.00"), idempotency_key="k-1")
    assert _open(sap, invoice.AccountingDocument) == ("100.00", "")

    def pay(amount: str | None) -> httpx.Response:
        body = {
            "company_code": COMPANY,
            "fiscal_year": 2027,
            "accounting_document": invoice.AccountingDocument,
            "posting_date": "2027-01-20",
        }
        return httpx.post(
            f"{sap_sim.base_url}/admin/customer-payments", json=body | ({"amount": amount} if amount else {})
        )

    first = pay("30.00")
    assert first.status_code == 200 and first.json()["AccountingDocumentType"] == "DZ"
    assert _open(sap, invoice.AccountingDocument) == ("70.00", "")  # partly paid: open for the rest
    second = pay(None)  # all that is open
    assert second.status_code == 200
    assert _open(sap, invoice.AccountingDocument) == ("0.00", second.json()["AccountingDocument"])
    assert pay(None).status_code == 409  # nothing open any more
