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


def test_a_foreign_currency_document_holds_company_code_amounts(sap: Any) -> None:
    """docs/simulators.md, "Amounts in company code currency": a USD document in a GBP company code
    is translated at the ``ExchangeRate`` sent (or takes the amounts sent), balanced in GBP too;
    a document in the company code's currency is at rate 1."""
    from psa_erp_sync.billing.sap import CustomerDocumentInput, CustomerItemInput
    from psa_erp_sync.clients.sap import SapRejected

    def usd(rate: str, local: tuple[str, str] | None) -> Any:
        day = date(2027, 1, 5)
        items = [
            CustomerItemInput(gl_account="1200", amount=Decimal("100.01"), debit_credit="S", customer="C1"),
            CustomerItemInput(gl_account="4000", amount=Decimal("100.01"), debit_credit="H"),
        ]
        if local is not None:
            items = [
                i.model_copy(update={"amount_company_code": Decimal(a)})
                for i, a in zip(items, local, strict=True)
            ]
        return CustomerDocumentInput.model_construct(  # unvalidated: the simulator is what refuses
            company_code=COMPANY,
            document_type="DR",
            document_date=day,
            posting_date=day,
            currency="USD",
            header_text="",
            items=tuple(items),
            exchange_rate=Decimal(rate),
        )

    translated = sap.post_journal_entry(usd("0.7913", None), idempotency_key="k-fx1")
    [row] = sap.journal_entry_rows(
        {"$filter": f"AccountingDocument eq '{translated.AccountingDocument}'", "$expand": "to_Item"}
    )
    assert (row["TransactionCurrency"], row["CompanyCodeCurrency"], row["ExchangeRate"]) == (
        "USD",
        "GBP",
        "0.7913",
    )
    # 100.01 x 0.7913 = 79.137913 -> 79.14 on both items
    assert [i["AmountInCompanyCodeCurrency"] for i in row["to_Item"]["results"]] == ["79.14", "79.14"]
    with pytest.raises(SapRejected) as unbalanced:
        sap.post_journal_entry(usd("0.7913", ("79.14", "79.13")), idempotency_key="k-fx2")
    assert unbalanced.value.code == "F5/703"
    same = sap.post_journal_entry(_invoice("C1", "12.50"), idempotency_key="k-fx3")
    [gbp] = sap.journal_entry_rows(
        {"$filter": f"AccountingDocument eq '{same.AccountingDocument}'", "$expand": "to_Item"}
    )
    assert gbp["ExchangeRate"] == "1"
    assert [i["AmountInCompanyCodeCurrency"] for i in gbp["to_Item"]["results"]] == ["12.50", "12.50"]
