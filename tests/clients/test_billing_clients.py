"""Billing through the clients, against the real simulators over loopback: ERP invoices, credit
memos and journals upserted by external id through the batch path, read back and validated;
payments and currency rates; PSA invoices created, marked billed and paid."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from psa_erp_sync.clients.erp import ErpAmbiguous, ErpRejected, NetSuiteClient
from psa_erp_sync.clients.erp_models import (
    BillingLine,
    CreditMemoIn,
    ErpInvoice,
    InvoiceIn,
    JournalEntryIn,
    JournalLineIn,
)
from psa_erp_sync.clients.psa import HarvestClient
from psa_erp_sync.clients.psa_models import Invoice
from simulators.psa import sample
from tests.clients.test_erp_client import make_client
from tests.conftest import RunningSimulator
from tests.simulators.test_erp_sim import BASE_SEED

pytestmark = pytest.mark.integration


@pytest.fixture
def erp(erp_sim: RunningSimulator) -> RunningSimulator:
    erp_sim.admin("POST", "/seed", json=copy.deepcopy(BASE_SEED))
    return erp_sim


@pytest.fixture
def client(erp: RunningSimulator) -> Iterator[NetSuiteClient]:
    with make_client(erp.base_url) as c:
        yield c


def an_invoice(ext: str, *amounts: str, day: str = "2026-11-30") -> InvoiceIn:
    return InvoiceIn(
        external_id=ext,
        tran_date=dt.date.fromisoformat(day),
        customer="psa-client-1",
        job="psa-project-1",
        subsidiary="LE-US1",
        currency="USD",
        lines=[
            BillingLine(
                amount=Decimal(a), source_type="timebill", source_id=f"psa-te-{n}", quantity=Decimal(1)
            )
            for n, a in enumerate(amounts)
        ],
    )


def test_invoices_post_through_the_batch_and_read_back(client: NetSuiteClient) -> None:
    invoices = [an_invoice(f"inv-{n}", "100.00", "20.05") for n in range(3)]
    first = client.post_billing(invoices, "bill-1")
    assert [i.operation for i in first.items] == ["insert"] * 3
    replay = client.post_billing(invoices, "bill-1")  # the same key: the earlier job, nothing new
    assert replay.replayed and replay.job_id == first.job_id
    again = client.post_billing(invoices, "bill-2")  # a new key: updates by external id
    assert [i.operation for i in again.items] == ["update"] * 3
    back = client.read_billing("invoice", "inv-0")
    assert isinstance(back, ErpInvoice)
    assert back.total == Decimal("120.05") and back.amount_remaining == Decimal("120.05")
    assert back.status == "Open" and [(li.source_id, li.amount) for li in back.lines] == [
        ("psa-te-0", Decimal("100.00")),
        ("psa-te-1", Decimal("20.05")),
    ]
    assert client.read_billing("invoice", "inv-missing") is None
    listed = list(client.iter_invoices(modified_since=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)))
    assert sorted(i.external_id or "" for i in listed) == ["inv-0", "inv-1", "inv-2"]
    assert list(client.iter_invoices(modified_since=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))) == []
    lines = list(client.iter_transaction_lines([back.id or ""]))
    assert [(x.line_sequence_number, x.source_type, x.amount) for x in lines] == [
        (1, "timebill", Decimal("100.00")),
        (2, "timebill", Decimal("20.05")),
    ]
    with pytest.raises(ValueError, match="one record type"):
        client.post_billing(
            [invoices[0], CreditMemoIn(**{**invoices[0].model_dump(), "external_id": "cm"})], "k"
        )


def test_the_posting_engines_read_back_finds_billing_records(client: NetSuiteClient) -> None:
    """The engine resolves an ambiguous batch with ``SELECT id, externalid, memo, postingperiod
    FROM <type> WHERE externalid IN (...)`` and looks for its key in the memo: billing types answer it."""
    invoice = an_invoice("inv-eng", "3.00").model_copy(update={"memo": "key:0123456789abcdef"})
    journal = JournalEntryIn(
        external_id="je-eng",
        tran_date=dt.date(2026, 11, 15),
        subsidiary="LE-US1",
        currency="USD",
        memo="key:fedcba9876543210",
        lines=[
            JournalLineIn(account="1", debit=Decimal("1.00")),
            JournalLineIn(account="2", credit=Decimal("1.00")),
        ],
    )
    for record, key in ((invoice, "0123456789abcdef"), (journal, "fedcba9876543210")):
        client.post_billing([record], f"eng-{key}")
        rtype = type(record).RECORD_TYPE
        rows = list(
            client.suiteql(
                f"SELECT id, externalid, memo, postingperiod FROM {rtype} WHERE externalid IN ('{record.external_id}')"
            )
        )
        assert len(rows) == 1 and f"key:{key}" in rows[0]["memo"]
        assert client.delete(rtype, record.external_id) is True  # a reversal, as the engine sends it
        assert client.read_billing(rtype, record.external_id) is None


def test_closed_period_is_a_per_record_rejection(client: NetSuiteClient) -> None:
    result = client.post_billing([an_invoice("inv-oct", "1.00", day="2026-10-15")], "oct")
    assert result.failed[0].error is not None and result.failed[0].error.code == "PERIOD_CLOSED"
    with pytest.raises(ErpRejected) as refused:
        client.upsert_billing(an_invoice("inv-oct", "1.00", day="2026-10-15"))
    assert refused.value.per_record and refused.value.codes == ["PERIOD_CLOSED"]


def test_journals_are_checked_before_and_by_the_erp(client: NetSuiteClient) -> None:
    lines = [
        JournalLineIn(account="1200", debit=Decimal("10.00")),
        JournalLineIn(account="4000", credit=Decimal("10.00")),
    ]
    journal = JournalEntryIn(
        external_id="je-1", tran_date=dt.date(2026, 11, 15), subsidiary="LE-US1", currency="USD", lines=lines
    )
    assert client.upsert_billing(journal).isdigit()
    with pytest.raises(ValidationError, match="out of balance"):
        JournalEntryIn(
            external_id="je-2",
            tran_date=dt.date(2026, 11, 15),
            subsidiary="LE-US1",
            currency="USD",
            lines=[lines[0], JournalLineIn(account="4000", credit=Decimal("9.99"))],
        )
    # Whatever slips past the model is refused by the ERP in NetSuite's shape.
    raw = journal.to_payload()
    raw["line"]["items"][1]["credit"] = "9.99"
    with pytest.raises(ErpRejected) as refused:
        client.upsert("journalentry", "je-3", {k: v for k, v in raw.items() if k != "externalId"})
    assert refused.value.codes == ["UNBALANCED_JOURNAL"]


def test_payments_and_credit_memos_move_the_invoice(client: NetSuiteClient, erp: RunningSimulator) -> None:
    client.upsert_billing(an_invoice("inv-p", "90.00"))
    memo = CreditMemoIn(**{**an_invoice("cm-p", "10.00").model_dump(), "created_from": "inv-p"})
    client.upsert_billing(memo)
    erp.admin("POST", "/invoices/eid:inv-p/payments", json={"amount": "30.00"})
    invoice = client.read_billing("invoice", "inv-p")
    assert invoice.amount_remaining == Decimal("50.00") and invoice.status == "Open"
    erp.admin("POST", "/invoices/eid:inv-p/payments", json={})
    assert client.read_billing("invoice", "inv-p").status == "Paid In Full"
    payments = list(client.iter_customer_payments())
    assert sorted(p.payment for p in payments) == [Decimal("30.00"), Decimal("50.00")]
    assert client.read_billing("creditmemo", "cm-p").created_from.key == "inv-p"


def test_currency_rate_for_a_date(client: NetSuiteClient) -> None:
    for day, rate in (("2026-10-31", "1.25"), ("2026-11-30", "1.3")):
        client.upsert(
            "currencyrate",
            f"GBP-USD-{day}",
            {
                "baseCurrency": {"refName": "USD"},
                "transactionCurrency": {"refName": "GBP"},
                "exchangeRate": rate,
                "effectiveDate": day,
            },
        )
    on_15 = client.currency_rate("GBP", "USD", dt.date(2026, 11, 15))
    assert on_15 is not None and on_15.exchange_rate == Decimal("1.25")
    assert client.currency_rate("GBP", "USD", dt.date(2026, 12, 1)).exchange_rate == Decimal("1.3")
    assert client.currency_rate("GBP", "USD", dt.date(2026, 1, 1)) is None
    with pytest.raises(ValueError, match="invalid currency code"):
        client.currency_rate("gbp'--", "USD", dt.date(2026, 1, 1))


def test_a_5xx_after_commit_is_ambiguous_and_the_read_back_settles_it(
    client: NetSuiteClient, erp: RunningSimulator
) -> None:
    erp.admin(
        "POST",
        "/faults",
        json={
            "id": "f",
            "action": "status_after_commit",
            "status": 502,
            "path_regex": "/invoice/batch",
            "max_hits": 1,
        },
    )
    with pytest.raises(ErpAmbiguous):
        client.post_billing([an_invoice("inv-a", "5.00")], "amb")
    assert client.read_billing("invoice", "inv-a").total == Decimal("5.00")
    assert client.post_billing([an_invoice("inv-a", "5.00")], "amb").replayed


# --------------------------------------------------------------------------- PSA


def test_psa_invoice_create_bill_pay(psa_sim: RunningSimulator, psa_client: HarvestClient) -> None:
    data = sample.build()
    psa_sim.admin("POST", "/seed", json=data)
    client_id = data["clients"][0]["id"]
    entries = [
        e
        for e in psa_client.iter_time_entries(client_id=client_id, is_billed=False)
        if e["billable"] and e["billable_rate"] is not None
    ][:2]
    assert list(psa_client.iter_invoices()) == []
    invoice = psa_client.create_invoice(
        client_id=client_id,
        number="INV-9",
        time_entry_ids=[e["id"] for e in entries],
        issue_date=dt.date(2026, 11, 30),
    )
    assert isinstance(invoice, Invoice) and invoice.state == "draft" and invoice.due_amount == invoice.amount
    for entry in entries:
        billed = psa_client.get_time_entry(entry["id"])
        assert (
            billed is not None
            and billed["is_billed"]
            and billed["invoice"] == {"id": invoice.id, "number": "INV-9"}
        )
    assert psa_client.find_invoice("INV-9") == invoice
    opened = psa_client.mark_invoice(invoice.id, "send")
    assert opened.state == "open" and opened.sent_at is not None
    psa_client.record_invoice_payment(invoice.id, invoice.amount, paid_date=dt.date(2026, 12, 2))
    paid = psa_client.get_invoice(invoice.id)
    assert (
        paid is not None
        and paid.state == "paid"
        and paid.due_amount == 0
        and paid.paid_date == dt.date(2026, 12, 2)
    )
    assert [p.amount for p in psa_client.iter_invoice_payments(invoice.id)] == [invoice.amount]
    assert [i.id for i in psa_client.iter_invoices(state="paid")] == [invoice.id]


def test_psa_invoice_payload_is_validated() -> None:
    with pytest.raises(ValidationError):
        Invoice.model_validate(
            {
                "id": 1,
                "client": {"id": 1},
                "number": "x",
                "amount": 1.5,
                "due_amount": 0,
                "currency": "USD",
                "state": "sent",
                "created_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-01T00:00:00Z",
            }
        )
    ok: dict[str, Any] = {
        "id": 1,
        "client": {"id": 1},
        "number": "x",
        "amount": 1.5,
        "due_amount": 0,
        "currency": "USD",
        "state": "open",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }
    assert Invoice.model_validate(ok).amount == Decimal("1.5")
