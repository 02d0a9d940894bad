"""Billing on SAP for the legal entities routed there (issue 15), against real PostgreSQL and the
NetSuite, SAP and PSA simulators over loopback (docs/billing.md, "Billing on SAP").

LE-UK1 moves from NetSuite to SAP (company code 2010) on 2027-01-01 (tests/two_erps.py); LE-US1
stays on NetSuite. Invoices go where their legal entity routes on their date; a credit memo goes
where the invoice it credits is; SAP's customer documents are read back into the ODS billing
tables beside NetSuite's, a payment cleared in SAP marks the PSA invoice paid, and the close
report's invoiced and credited figures per ERP reconcile to the cent. A USD invoice of LE-UK1 on
SAP carries its GBP amounts at the document's rate, so the close report's functional check matches.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests import two_erps
from tests.billing.invoicing import add_rate, clean_billing, correct, erp_documents, insert_events
from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration

UK, COMPANY = two_erps.UK, two_erps.COMPANY
CUSTOMER, US_CUSTOMER = "psa-client-100", "psa-client-101"  # PSA sample clients 100 and 101
NETSUITE_MORE = {
    "subsidiaries": [
        {
            "external_id": "LE-US1",
            "name": "Northwind Inc",
            "country": "US",
            "currency": "USD",
            "is_inactive": False,
        }
    ],
    "currencies": [{"symbol": "USD", "name": "USD"}],
    "customers": [
        {
            "external_id": CUSTOMER,
            "company_name": "Client 0",
            "subsidiary": UK,
            "currency": "GBP",
            "is_inactive": False,
        },
        {
            "external_id": US_CUSTOMER,
            "company_name": "Client 1",
            "subsidiary": "LE-US1",
            "currency": "USD",
            "is_inactive": False,
        },
    ],
    "jobs": [
        {
            "external_id": f"psa-project-{p}",
            "name": f"Project {p}",
            "customer": c,
            "subsidiary": e,
            "currency": cur,
            "billing_type": "time_and_materials",
            "contract_value": "100000.00",
            "is_inactive": False,
        }
        for p, c, e, cur in (("900", CUSTOMER, UK, "GBP"), ("901", US_CUSTOMER, "LE-US1", "USD"))
    ],
    "accounting_periods": [
        {
            "external_id": f"LE-US1-{m}",
            "subsidiary": "LE-US1",
            "period_name": m,
            "start_date": f"{m}-01",
            "end_date": f"{m}-{d}",
            "closed": False,
            "all_locked": False,
            "ar_locked": False,
            "ap_locked": False,
        }
        for m, d in two_erps.MONTHS
    ],
}


@pytest.fixture
def two(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
) -> Iterator[tuple[str, Any]]:
    """The two ERPs seeded, LE-UK1's customer in SAP's company code, an empty billing ODS; the DSN
    and an SAP client."""
    from psa_erp_sync.clients.http import RetryPolicy
    from psa_erp_sync.clients.sap import S4HanaClient

    two_erps.connect_two_erps(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim)
    erp_sim.admin("POST", "/seed", json=NETSUITE_MORE)
    clean_billing(clean_ods)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute("TRUNCATE billing.psa_invoice, billing.psa_status_sweep")
    retry = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)
    with S4HanaClient(base_url=sap_sim.base_url, user="PSA_COMM", password="secret", retry=retry) as sap:
        sap.upsert_master(
            "CustomerCollection",
            {"Customer": CUSTOMER, "CompanyCode": COMPANY, "CustomerName": "Client 0", "Currency": "GBP"},
        )
        yield clean_ods, sap


def event(
    source_id: str,
    day: str,
    amount: int,
    *,
    kind: str = "time",
    project: str = "900",
    customer: str = CUSTOMER,
    entity: str = UK,
    currency: str = "GBP",
) -> dict[str, Any]:
    when = date.fromisoformat(day)
    cycle = f"monthly:{when:%Y-%m}"
    return {
        "event_ref": f"{kind}:psa:{source_id}:v1",
        "kind": kind,
        "source_system": "psa",
        "source_id": source_id,
        "source_version": "v1",
        "billing_type": "time_and_materials" if kind == "time" else "milestone",
        "customer_ref": customer,
        "project_ref": project,
        "legal_entity": entity,
        "currency": currency,
        "cycle": cycle,
        "event_date": when,
        "quantity": None,
        "rate_minor": None,
        "amount_minor": amount,
        "credits_ref": None,
        "group_key": f"{customer}|{project}|{entity}|{currency}|{cycle}",
    }


def sap_adapter(sap: Any) -> Any:
    from psa_erp_sync.billing.sap import SapBillingAdapter
    from psa_erp_sync.posting.adapter import SapMapping

    return SapBillingAdapter(sap, SapMapping(company_codes={UK: COMPANY}, fiscal_years=(2026, 2027)))


def run_pass(dsn: str, erp_sim: RunningSimulator, sap: Any, run_id: str) -> Any:
    """One invoicing pass, both ERPs (what one try of the ``invoice`` task does)."""
    from psa_erp_sync.billing.invoice_pass import invoice_ready_events
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.clients.http import RetryPolicy
    from psa_erp_sync.config import load_config
    from psa_erp_sync.posting.engine import EngineSettings

    retry = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)
    with NetSuiteClient(base_url=erp_sim.base_url, account_id="A", token="t", timeout=10, retry=retry) as ns:
        return invoice_ready_events(
            dsn=dsn,
            client=ns,
            sap=sap_adapter(sap),
            config=load_config(),
            run_id=run_id,
            settings=EngineSettings(batch_size=10, max_concurrency=2, progress_every_s=3600),
        )


def sap_documents(dsn: str) -> list[dict[str, Any]]:
    """The SAP simulator's documents with their items (its own schema in the test database)."""
    from psycopg.rows import dict_row

    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        docs = cur.execute("SELECT * FROM sim_sap.journal_entry ORDER BY accounting_document").fetchall()
        for doc in docs:
            doc["items"] = cur.execute(
                "SELECT * FROM sim_sap.journal_entry_item WHERE accounting_document = %s ORDER BY item",
                (doc["accounting_document"],),
            ).fetchall()
    return docs


def routes(dsn: str) -> dict[tuple[str, str], str]:
    """(record type, document's first member source id) -> target ERP of its ledger row."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT p.record_type, min(e.source_id), p.target_erp FROM ledger.posting p"
            " JOIN billing.document_line l ON l.document_ref = p.source_id"
            " JOIN billing.event e ON e.event_ref = l.event_ref"
            " WHERE p.source_system = 'billing' GROUP BY p.record_type, p.source_id, p.target_erp"
        ).fetchall()
    return {(r[0], r[1]): r[2] for r in rows}


def read_back(dsn: str, erp_sim: RunningSimulator, sap: Any, run_id: str) -> dict[str, Any]:
    """The billing read-back of both ERPs (what the billing_readback DAG's tasks do)."""
    from psa_erp_sync.billing import readback
    from psa_erp_sync.clients.erp import NetSuiteClient

    jobs = readback.JobMapping("psa-project-{id}")
    out: dict[str, Any] = {}
    with (
        psycopg.connect(dsn) as conn,
        NetSuiteClient(base_url=erp_sim.base_url, account_id="A", token="t") as ns,
    ):
        for record_type in ("invoice", "creditmemo", "customerpayment"):
            readback.read_back_type(
                conn, ns, record_type=record_type, run_id=run_id, overlap=timedelta(minutes=5), jobs=jobs
            )
            result = readback.read_back_sap_type(
                conn, sap_adapter(sap), record_type=record_type, run_id=run_id, jobs=jobs, page_size=2
            )
            assert result is not None
            out[record_type] = result
    return out


def test_sap_routed_invoices_credit_memos_readback_payment_and_close(
    two: tuple[str, Any], erp_sim: RunningSimulator, psa_sim: RunningSimulator, psa_client: Any
) -> None:
    from psa_erp_sync.billing import sap_status
    from psa_erp_sync.clients.sap import journal_reference
    from psa_erp_sync.reconcile import close_report as cr
    from simulators.psa import sample

    dsn, sap = two
    insert_events(
        dsn,
        [
            event("1", "2026-12-15", 150_000),  # LE-UK1 before the cutover: NetSuite
            event("10000", "2027-01-05", 25_000),  # LE-UK1 after it: SAP (PSA sample time entries)
            event("10002", "2027-01-06", 30_000),
            event("m7", "2027-01-07", 4_250, kind="milestone"),
            event(
                "5",
                "2027-01-05",
                12_000,
                project="901",
                customer=US_CUSTOMER,
                entity="LE-US1",
                currency="USD",
            ),
        ],
    )
    first = run_pass(dsn, erp_sim, sap, "r1")
    assert first.still_pending == 0 and first.documents == {"posted": 3}, (first.plan, first.outcome)
    assert routes(dsn) == {
        ("invoice", "1"): "netsuite",
        ("invoice", "10000"): "sap",
        ("invoice", "5"): "netsuite",
    }
    assert first.outcome["invoice"]["by_erp"]["sap"]["posted"] == 1
    [doc] = sap_documents(dsn)
    with psycopg.connect(dsn) as conn:
        key, ref, erp_id = conn.execute(
            "SELECT idempotency_key, document_ref, erp_internal_id FROM billing.document WHERE legal_entity = %s"
            " AND doc_date >= '2027-01-01'",
            (UK,),
        ).fetchone()  # type: ignore[misc]  # one SAP document
    assert erp_id == f"sap:{COMPANY}:2027:{doc['accounting_document']}"
    assert (doc["document_type"], doc["currency"], doc["document_reference_id"]) == (
        "DR",
        "GBP",
        journal_reference(key),
    )
    debtor, *lines = doc["items"]
    assert (debtor["customer"], debtor["debit_credit"], str(debtor["amount"])) == (CUSTOMER, "S", "592.50")
    assert debtor["item_text"] == f"billing:{ref}" and debtor["wbs_element"] == "psa-project-900"
    assert [(i["item_text"], str(i["amount"]), i["debit_credit"]) for i in lines] == [
        ("milestone:psa-milestone-m7", "42.50", "H"),  # in event order
        ("timebill:psa-te-10000", "250.00", "H"),
        ("timebill:psa-te-10002", "300.00", "H"),
    ]
    assert len(erp_documents(dsn, "invoice")) == 2  # NetSuite: LE-UK1's December and LE-US1's January

    rerun = run_pass(dsn, erp_sim, sap, "r2")  # nothing new: nothing sent
    assert rerun.plan["invoice"]["documents"] == {"invoice": 0, "creditmemo": 0}
    assert all(o["posted"] == 0 for o in rerun.outcome.values())
    assert len(sap_documents(dsn)) == 1 and len(erp_documents(dsn, "invoice")) == 2

    # A milestone corrected after invoicing: a credit memo in SAP applied to its invoice, and a new
    # invoice. LE-UK1's December line unapproved, credited on 2027-01-10: its invoice is in NetSuite,
    # so the credit memo goes there (applied to it), although January routes to SAP.
    correct(dsn, "milestone:psa:m7:v1", 3_000)
    correct(dsn, "time:psa:1:v1", None)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE billing.event SET event_date = '2027-01-10' WHERE event_ref = 'time:psa:1:v1:credit'"
        )
    third = run_pass(dsn, erp_sim, sap, "r3")
    assert third.still_pending == 0 and third.documents == {"posted": 6}, (third.plan, third.outcome)
    assert routes(dsn)[("creditmemo", "m7")] == "sap" and routes(dsn)[("creditmemo", "1")] == "netsuite"
    docs = sap_documents(dsn)
    assert [d["document_type"] for d in docs] == ["DR", "DR", "DG"]  # invoices first
    memo = docs[2]["items"][0]
    assert (memo["customer"], memo["debit_credit"], str(memo["amount"])) == (CUSTOMER, "H", "42.50")
    assert (memo["invoice_reference"], memo["invoice_reference_fiscal_year"]) == (
        doc["accounting_document"],
        2027,
    )
    [ns_memo] = erp_documents(dsn, "creditmemo")
    assert ns_memo["createdFrom"]["externalId"].startswith("inv-") and ns_memo["total"] in (
        "1500.00",
        "1500.0",
        1500,
    )

    # Read back from both ERPs into the same tables, SAP paged two documents at a time.
    read_back(dsn, erp_sim, sap, "rb1")
    with psycopg.connect(dsn) as conn:
        held = conn.execute(
            "SELECT erp, record_type, total_minor, amount_remaining_minor, status, created_from_ref"
            " FROM billing.erp_invoice WHERE legal_entity = %s AND erp = 'sap' ORDER BY internal_id",
            (UK,),
        ).fetchall()
        refs = {r[0] for r in conn.execute("SELECT external_id FROM billing.erp_invoice WHERE erp = 'sap'")}
        ours = {
            r[0]
            for r in conn.execute(
                "SELECT source_id FROM ledger.posting WHERE source_system = 'billing' AND target_erp = 'sap'"
            )
        }
    assert held == [
        ("sap", "invoice", 59_250, 55_000, "Open", None),  # 592.50 less the 42.50 credited
        ("sap", "invoice", 3_000, 3_000, "Open", None),
        ("sap", "creditmemo", 4_250, None, "Open", erp_id),
    ]
    assert refs == ours and len(refs) == 3  # each SAP document names our document
    again = read_back(dsn, erp_sim, sap, "rb2")  # re-read: nothing changed, nothing written
    assert all(r.changed == 0 for r in again.values())

    # The customer pays what is open on the first invoice: SAP clears it; read back and to the PSA.
    cleared = pay_in_sap(sap, doc["accounting_document"])
    after = read_back(dsn, erp_sim, sap, "rb3")
    assert (after["invoice"].changed, after["creditmemo"].changed, after["customerpayment"].changed) == (
        1,
        1,
        1,
    )
    with psycopg.connect(dsn) as conn:
        first_invoice = conn.execute(
            "SELECT status, amount_remaining_minor FROM billing.erp_invoice WHERE internal_id = %s", (erp_id,)
        ).fetchone()
        applications = conn.execute(
            "SELECT p.erp, p.payment_minor, a.invoice_internal_id, a.amount_minor FROM billing.erp_payment p"
            " JOIN billing.erp_payment_application a ON a.payment_internal_id = p.internal_id"
        ).fetchall()
    assert first_invoice == ("Paid In Full", 0)
    assert applications == [("sap", 55_000, erp_id, 55_000)] and cleared

    psa_sim.admin("POST", "/seed", json=sample.build())
    with psycopg.connect(dsn, autocommit=True) as conn:
        status = sap_status.sweep_sap(conn, psa_client, sap_adapter(sap), run_id="st1")
    assert status.outcomes == {"created": 2}, status.as_dict()
    shown = psa_client.find_invoice(doc["accounting_document"], client_id=100)
    assert shown is not None and shown.state == "paid"
    assert psa_client.get_time_entry(10000)["is_billed"] is True
    with psycopg.connect(dsn, autocommit=True) as conn:
        again_status = sap_status.sweep_sap(conn, psa_client, sap_adapter(sap), run_id="st2")
    assert again_status.outcomes == {"unchanged": 2}

    # The close of January: invoiced and credited per ERP, to the cent, reconciled record by record.
    with psycopg.connect(dsn) as conn:
        [gbp] = cr.currency_figures(conn, UK, "2027-01")
        invoices = cr.reconcile_invoices(conn, legal_entity=UK, period="2027-01")
    assert (gbp.invoiced_minor, gbp.credited_minor) == (62_250, 154_250)
    assert gbp.invoiced_by_erp_minor == {"netsuite": 0, "sap": 62_250}
    assert gbp.credited_by_erp_minor == {"netsuite": 150_000, "sap": 4_250}
    assert cr._by_erp(gbp) == {  # what the headline shows beside invoiced and credited
        "by_erp": {
            "netsuite": {"invoiced": "0.00", "credited": "1500.00"},
            "sap": {"invoiced": "622.50", "credited": "42.50"},
        }
    }
    assert all(r.matched for r in invoices) and invoices[0].sides == {
        "events": 62_250 - 154_250,
        "document": 62_250 - 154_250,
        "erp": 62_250 - 154_250,
    }


def pay_in_sap(sap: Any, document: str) -> dict[str, Any]:
    """A customer payment of everything open on ``document``, posted in SAP (the simulator's admin
    action, as accounts receivable would)."""
    import httpx

    base = str(sap._http.base_url)
    response = httpx.post(
        f"{base}/admin/customer-payments",
        json={
            "company_code": COMPANY,
            "fiscal_year": 2027,
            "accounting_document": document,
            "posting_date": "2027-01-20",
        },
        timeout=30,
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    assert body["AccountingDocumentType"] == "DZ"
    return body


@pytest.mark.parametrize("fault", ["status_after_commit", "drop_after_commit"])
def test_an_ambiguous_sap_post_leaves_exactly_one_document(
    two: tuple[str, Any], erp_sim: RunningSimulator, sap_sim: RunningSimulator, fault: str
) -> None:
    """A 5xx after SAP committed, or the connection dropped after it, on every invoice's first try:
    each invoice is one SAP document, found by its reference, never posted twice."""
    dsn, sap = two
    insert_events(
        dsn,
        [event(str(n), f"2027-01-{n:02d}", 10_000 * n, project="900") for n in range(1, 4)]
        + [event(str(n), f"2027-02-{n:02d}", 1_000 * n, project="900") for n in range(4, 6)],
    )
    rule: dict[str, Any] = {
        "id": fault,
        "action": fault,
        "method": "POST",
        "path_regex": "JournalEntryCollection$",
        "every_nth": 1,  # the first post of each invoice: committed, then the answer is lost
        "max_hits": 2,
    }
    if fault == "status_after_commit":
        rule["status"] = 502
    sap_sim.admin("PUT", "/faults", json=[rule])
    try:
        result = run_pass(dsn, erp_sim, sap, "f1")
        hits = sap_sim.admin("GET", "/faults")["rules"][0]["hits"]
    finally:
        sap_sim.admin("DELETE", "/faults")
    assert hits == 2
    assert result.still_pending == 0 and result.documents == {"posted": 2}, (result.plan, result.outcome)
    docs = sap_documents(dsn)
    references = [d["document_reference_id"] for d in docs]
    assert len(docs) == 2 and len(set(references)) == 2  # one document per invoice, none twice
    assert sorted(str(d["items"][0]["amount"]) for d in docs) == ["600.00", "90.00"]
    rerun = run_pass(dsn, erp_sim, sap, "f2")
    assert all(o["posted"] == 0 for o in rerun.outcome.values()) and len(sap_documents(dsn)) == 2


def test_a_closed_sap_period_parks_the_sap_invoice_by_sap_periods(
    two: tuple[str, Any], erp_sim: RunningSimulator, sap_sim: RunningSimulator
) -> None:
    """SAP's January closed (NetSuite's January open): LE-UK1's January invoice is decided against
    SAP's periods and parked for finance (LE-UK1's policy is ``park``); December's goes to NetSuite."""
    dsn, sap = two
    sap_sim.admin(
        "POST", "/periods", json=[{"company_code": COMPANY, "fiscal_year": 2027, "period": 1, "open": False}]
    )
    insert_events(dsn, [event("1", "2026-12-15", 10_000), event("2", "2027-01-05", 20_000)])
    result = run_pass(dsn, erp_sim, sap, "p1")
    assert result.documents == {"posted": 1, "parked": 1}, (result.plan, result.outcome)
    assert routes(dsn) == {("invoice", "1"): "netsuite", ("invoice", "2"): "sap"}
    assert sap_documents(dsn) == []
    with psycopg.connect(dsn) as conn:
        items = conn.execute(
            "SELECT reason_code, legal_entity, detail ->> 'period' FROM exceptions.item"
            " WHERE domain = 'billing' AND status = 'open'"
        ).fetchall()
    assert items == [("PERIOD_CLOSED", UK, f"{UK}-2027-01")]


USD_GBP = ("USD", "GBP", date(2026, 12, 20), "0.7913")  # 1 USD = 0.7913 GBP from 2026-12-20


def test_a_usd_invoice_of_le_uk1_on_sap_carries_the_gbp_amounts_at_the_document_rate(
    two: tuple[str, Any], erp_sim: RunningSimulator
) -> None:
    from psa_erp_sync.reconcile import close_report as cr

    dsn, sap = two
    add_rate(erp_sim, dsn, USD_GBP)
    # Three USD lines whose GBP amounts, each translated, do not add up to the translated total.
    insert_usd_events(dsn)
    first = run_pass(dsn, erp_sim, sap, "fx1")
    assert first.still_pending == 0 and first.documents == {"posted": 1}, (first.plan, first.outcome)
    with psycopg.connect(dsn) as conn:
        ours = conn.execute(
            "SELECT currency, total_minor, functional_currency, functional_total_minor, fx_rate"
            " FROM billing.document WHERE legal_entity = %s",
            (UK,),
        ).fetchone()
    # 1,000.01 USD x 0.7913 = 791.307913 GBP -> 791.31 (half-even, once)
    assert ours == ("USD", 100_001, "GBP", 79_131, Decimal("0.7913000000"))

    [doc] = sap_documents(dsn)
    assert (doc["currency"], doc["company_code_currency"], doc["exchange_rate"]) == (
        "USD",
        "GBP",
        Decimal("0.7913"),
    )
    debtor, *lines = doc["items"]
    assert (str(debtor["amount"]), str(debtor["amount_company_code"])) == ("1000.01", "791.31")
    local = [i["amount_company_code"] for i in lines]
    # each line at the rate (333.33 -> 263.76, 333.34 -> 263.77 twice), the 1p difference on the largest
    assert [str(a) for a in local] == ["263.76", "263.78", "263.77"]
    assert sum(local) == debtor["amount_company_code"]

    read_back(dsn, erp_sim, sap, "fxrb1")
    with psycopg.connect(dsn) as conn:
        held = conn.execute(
            "SELECT erp, currency, total_minor, body ->> 'exchangerate' FROM billing.erp_invoice"
        ).fetchall()
        functional = cr.reconcile_invoices_functional(conn, legal_entity=UK, period="2027-01")
    assert functional and all(r.matched for r in functional), functional
    assert functional[0].sides == {"document": 79_131, "erp": 79_131}
    assert held == [("sap", "USD", 100_001, "0.7913")]


def insert_usd_events(dsn: str) -> None:
    insert_events(
        dsn,
        [
            event(source, day, amount, currency="USD")
            for source, day, amount in (
                ("10000", "2027-01-05", 33_333),
                ("10002", "2027-01-06", 33_334),
                ("10004", "2027-01-07", 33_334),
            )
        ],
    )
