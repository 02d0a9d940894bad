"""Issue 14 billing gaps, against real PostgreSQL and the ERP simulator over loopback: invoices in
a foreign currency at the ERP's rate, billing dead letters replayed exactly once, credit lines of
an invoice that never reached the ERP, and credit memos beyond what is still due
(docs/billing.md "Invoices exactly once", "Foreign currency")."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests.billing.invoicing import (
    EUR_GBP,
    Firm,
    clean_billing,
    correct,
    erp_documents,
    insert_events,
    run_pass,
)
from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration


@pytest.fixture
def billing_ods(clean_ods: str) -> str:
    clean_billing(clean_ods)
    return clean_ods


def _replay(dsn: str, record_type: str, **filters: Any) -> int:
    """What dead_letter_replay's select and release tasks do, with the same filter."""
    from psa_erp_sync.posting import replay

    with psycopg.connect(dsn) as conn, conn.transaction():
        rows = replay.select(conn, replay.ReplayFilter(record_type=record_type, **filters))
        return replay.release(conn, rows, run_id=f"replay-{record_type}", actor="test")


def test_foreign_currency_invoice_parks_without_a_rate_then_posts_at_the_erp_rate(
    billing_ods: str, erp_sim: RunningSimulator
) -> None:
    firm = Firm(customers=4, projects=4)
    firm.seed_erp(erp_sim)  # the simulator has the EUR rate; the ODS has not read it yet
    with psycopg.connect(billing_ods) as conn:
        conn.execute("TRUNCATE master.currency_rate")
    insert_events(
        billing_ods,
        [
            firm.event("1", "104", date(2026, 10, 5), amount=123457),
            firm.event("2", "101", date(2026, 10, 6), amount=5000),
        ],
    )
    first = run_pass(billing_ods, erp_sim, "fx-1")
    assert first.documents == {"posted": 1, "parked": 1}
    assert [d["currency"]["refName"] for d in erp_documents(billing_ods, "invoice")] == ["USD"]
    with psycopg.connect(billing_ods) as conn:
        item = conn.execute(
            "SELECT domain, record_type, reason_code, owner, detail->>'currency', detail->>'functional_currency'"
            " FROM exceptions.item WHERE kind = 'parked'"
        ).fetchall()
        conn.execute(
            "INSERT INTO master.currency_rate (base_currency, transaction_currency, effective_date, exchange_rate)"
            " VALUES ('GBP', 'EUR', %s, %s)",
            (EUR_GBP[2], EUR_GBP[3]),
        )  # master_data_sync read the rate
    assert item and item[0][:3] == ("billing", "invoice", "FX_RATE_MISSING") and item[0][4:] == ("EUR", "GBP")
    assert item[0][3]  # an owner from config/ownership.yaml
    assert _replay(billing_ods, "invoice", reason_code="FX_RATE_MISSING") == 1
    second = run_pass(billing_ods, erp_sim, "fx-2")
    assert second.documents == {"posted": 2}
    eur = [d for d in erp_documents(billing_ods, "invoice") if d["currency"]["refName"] == "EUR"]
    assert len(eur) == 1 and Decimal(eur[0]["exchangeRate"]) == Decimal("0.865")
    with psycopg.connect(billing_ods) as conn:
        doc = conn.execute(
            "SELECT total_minor, currency, functional_total_minor, functional_currency, fx_rate, fx_rate_date"
            " FROM billing.document WHERE currency = 'EUR'"
        ).fetchone()
        ledger = conn.execute(
            "SELECT state, functional_amount_minor, fx_rate FROM ledger.posting WHERE currency = 'EUR' ORDER BY seq"
        ).fetchall()
    # 1,234.57 EUR x 0.865 = 1,067.90 GBP (1067.903..., half-even once)
    assert doc == (123457, "EUR", 106790, "GBP", Decimal("0.8650000000"), EUR_GBP[2])
    assert [s for s, *_ in ledger] == ["superseded", "confirmed"] and ledger[1][1] == 106790


def test_a_rejected_invoice_is_replayed_through_the_ledger_exactly_once(
    billing_ods: str, erp_sim: RunningSimulator
) -> None:
    firm = Firm(customers=2, projects=2)
    firm.seed_erp(erp_sim)
    inactive = {
        "external_id": "psa-client-1",
        "company_name": "Customer 1",
        "subsidiary": "LE-US1",
        "currency": "USD",
        "is_inactive": True,
    }
    erp_sim.admin("POST", "/seed", json={"customers": [inactive]})
    insert_events(billing_ods, [firm.event("1", "101", date(2026, 10, 5), amount=5000)])
    first = run_pass(billing_ods, erp_sim, "dl-1")
    assert first.documents == {"rejected": 1} and erp_documents(billing_ods, "invoice") == []
    with psycopg.connect(billing_ods) as conn:
        letters = conn.execute(
            "SELECT domain, record_type, reason_code FROM exceptions.item WHERE kind = 'dead_letter'"
        ).fetchall()
    assert letters == [("billing", "invoice", "INACTIVE_RECORD")]
    erp_sim.admin("POST", "/seed", json={"customers": [inactive | {"is_inactive": False}]})
    assert _replay(billing_ods, "invoice", reason_code="INACTIVE_RECORD") == 1
    assert _replay(billing_ods, "invoice", reason_code="INACTIVE_RECORD") == 0  # released once
    second = run_pass(billing_ods, erp_sim, "dl-2")
    third = run_pass(billing_ods, erp_sim, "dl-3")  # nothing left: nothing sent
    assert second.documents == third.documents == {"posted": 1}
    assert third.outcome["invoice"]["erp_requests"] == 0
    sent = erp_documents(billing_ods, "invoice")
    assert len(sent) == 1 and sent[0]["total"] in ("50.00", "50")
    with psycopg.connect(billing_ods) as conn:
        rows = conn.execute("SELECT seq, state FROM ledger.posting ORDER BY seq").fetchall()
        status = conn.execute("SELECT status FROM exceptions.item WHERE kind = 'dead_letter'").fetchall()
        key = conn.execute(
            "SELECT d.idempotency_key = p.idempotency_key FROM billing.document d"
            " JOIN ledger.posting p ON p.source_id = d.document_ref AND p.state = 'confirmed'"
        ).fetchone()
    assert [s for _, s in rows] == ["superseded", "confirmed"] and status == [("replayed",)]
    assert key == (True,)


def test_a_credit_line_of_an_invoice_never_sent_raises_an_item_naming_both(
    billing_ods: str, erp_sim: RunningSimulator
) -> None:
    firm = Firm(customers=2, projects=2)
    firm.seed_erp(erp_sim)
    firm.projects["999"] = ("1", "LE-US1", "USD")  # no such job in the ERP: the invoice is refused
    insert_events(billing_ods, [firm.event("9", "999", date(2026, 10, 5), amount=7000)])
    run_pass(billing_ods, erp_sim, "stuck-1")
    with psycopg.connect(billing_ods) as conn:
        (event_ref, invoice) = conn.execute("SELECT event_ref, document_ref FROM billing.event").fetchone()
    correct(billing_ods, event_ref, None)  # unapproved after invoicing: a credit line
    result = run_pass(billing_ods, erp_sim, "stuck-2")
    assert result.plan["creditmemo"]["documents"]["creditmemo"] == 0
    with psycopg.connect(billing_ods) as conn:
        items = conn.execute(
            "SELECT reason_code, domain, source_id, detail->>'invoice', detail->>'invoice_state'"
            " FROM exceptions.item WHERE reason_code = 'CREDITED_INVOICE_NOT_SENT' AND status = 'open'"
        ).fetchall()
    assert items == [("CREDITED_INVOICE_NOT_SENT", "billing", f"{event_ref}:credit", invoice, "rejected")]
    assert erp_documents(billing_ods, "creditmemo") == []
    # Finance creates the job and replays the invoice: it is sent, then credited, in one pass.
    job = {
        "external_id": "psa-project-999",
        "name": "Project 999",
        "customer": "psa-client-1",
        "subsidiary": "LE-US1",
        "currency": "USD",
        "billing_type": "time_and_materials",
        "is_inactive": False,
    }
    erp_sim.admin("POST", "/seed", json={"jobs": [job]})
    assert _replay(billing_ods, "invoice", source_ids=(invoice,)) == 1
    after = run_pass(billing_ods, erp_sim, "stuck-3")
    assert after.documents == {"posted": 2} and len(erp_documents(billing_ods, "creditmemo")) == 1
    with psycopg.connect(billing_ods) as conn:
        open_items = conn.execute(
            "SELECT count(*) FROM exceptions.item WHERE status = 'open' AND domain = 'billing'"
        ).fetchone()
    assert open_items == (0,)


def test_a_credit_memo_beyond_the_amount_due_is_stand_alone(
    billing_ods: str, erp_sim: RunningSimulator
) -> None:
    firm = Firm(customers=2, projects=2)
    firm.seed_erp(erp_sim)
    insert_events(
        billing_ods,
        [
            firm.event("1", "101", date(2026, 10, 5), amount=10000),
            firm.event("2", "101", date(2026, 10, 6), amount=2000),
        ],
    )
    run_pass(billing_ods, erp_sim, "over-1")
    with psycopg.connect(billing_ods) as conn:
        (internal_id,) = conn.execute("SELECT erp_internal_id FROM billing.document").fetchone()
    erp_sim.admin("POST", f"/invoices/{internal_id}/payments", json={"amount": "110.00"})  # 10.00 still due
    correct(billing_ods, "time:psa:1:v1", None)  # a credit of 100.00 > 10.00 due
    result = run_pass(billing_ods, erp_sim, "over-2")
    assert result.still_pending == 0 and result.outcome["creditmemo"]["rejected"] == 0
    memos = erp_documents(billing_ods, "creditmemo")
    assert len(memos) == 1 and "createdFrom" not in memos[0] and "unapplied" in memos[0]["memo"]
    assert memos[0]["item"]["items"][0]["custcol_psa_credits_event"] == "time:psa:1:v1"
    with psycopg.connect(billing_ods) as conn:
        doc = conn.execute(
            "SELECT state, applied, credits_document IS NOT NULL FROM billing.document WHERE doc_type = 'creditmemo'"
        ).fetchone()
    assert doc == ("posted", False, True)
