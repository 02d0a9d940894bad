"""``trace psa <id>`` for a billed time entry: its billing events (the first version, its credit line
and the corrected version), the invoice and the credit memo (ERP ids, lines, state, as read back),
the PSA invoice mirror and the revenue journal of its project and period, through the function and
the command line (text and JSON). Real PostgreSQL and the ERP simulator over loopback: invoicing,
read-back and journal posting are the real passes; the PSA invoice mirror and the planned journal
are seeded rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import psycopg
import pytest

from tests.billing.invoicing import Firm, clean_billing, correct, insert_events, run_pass
from tests.billing.test_readback import truncate_billing
from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration

ENTRY = "1"  # Firm.events: source 1 is a time entry of project 102 (customer 2, LE-US2, USD)


def _client(erp: RunningSimulator) -> Any:
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.clients.http import RetryPolicy

    return NetSuiteClient(
        base_url=erp.base_url,
        account_id="A1",
        token="t",
        retry=RetryPolicy(max_attempts=2, base_delay_s=0.01),
    )


def _journal(conn: psycopg.Connection, project: str, entity: str, month: date) -> str:
    """A planned revenue journal of the project's period (what recognize_revenue leaves)."""
    key, ext = f"rev-key-{project}", f"rev-{project}-{entity}-{month:%Y%m}-USD-1"
    conn.execute(
        "INSERT INTO revenue.journal (idempotency_key, external_id, project_ref, legal_entity, period_month,"
        " currency, seq, inputs_hash, state, posting_period, posting_month, recognition_period, debit_minor,"
        " credit_minor, run_id) VALUES (%s, %s, %s, %s, %s, 'USD', 1, 'h1', 'planned', %s, %s, %s, 150000,"
        " 150000, 'rev-run')",
        (key, ext, project, entity, month, f"{entity}-{month:%Y-%m}", month, f"{entity}-{month:%Y-%m}"),
    )
    conn.execute(
        "INSERT INTO revenue.journal_line (idempotency_key, line_no, account, role, debit_minor, credit_minor)"
        " VALUES (%s, 1, '1250', 'contract_asset', 150000, 0), (%s, 2, '4000', 'revenue', 0, 150000)",
        (key, key),
    )
    return ext


@pytest.fixture
def billed(clean_ods: str, erp_sim: RunningSimulator) -> Iterator[dict[str, Any]]:
    from psa_erp_sync.billing import readback
    from psa_erp_sync.config import load_config
    from psa_erp_sync.posting.engine import EngineSettings
    from psa_erp_sync.revenue.posting import post_planned_journals

    clean_billing(clean_ods)
    firm = Firm(customers=3, projects=4)
    firm.seed_erp(erp_sim)
    day = date(2026, 10, 12)
    events = [
        firm.event(ENTRY, "102", day, amount=120000, quantity=8, rate=15000),
        firm.event("2", "102", day + timedelta(days=1), amount=60000, quantity=4, rate=15000),
    ]
    insert_events(clean_ods, events)
    run_pass(clean_ods, erp_sim, "bill-1")
    correct(clean_ods, events[0]["event_ref"], 90000)  # 8 h corrected to 6 h after invoicing
    run_pass(clean_ods, erp_sim, "bill-2")
    with psycopg.connect(clean_ods) as conn, _client(erp_sim) as client:
        invoice = conn.execute(
            "SELECT document_ref, erp_internal_id FROM billing.document WHERE doc_type = 'invoice'"
            " AND document_ref = (SELECT document_ref FROM billing.event WHERE event_ref = %s)",
            (events[0]["event_ref"],),
        ).fetchone()
        assert invoice is not None
        conn.execute(
            "INSERT INTO billing.psa_invoice (erp_external_id, erp_internal_id, psa_invoice_id, psa_number,"
            " erp_status, psa_state, paid_minor, currency) VALUES (%s, %s, 9001, 'INV-9001', 'Open', 'open', 0,"
            " 'USD')",
            invoice,
        )
        journal = _journal(conn, "102", "LE-US2", day.replace(day=1))
        conn.commit()
        readback.read_back(
            conn,
            client,
            run_id="rb-1",
            overlap=timedelta(minutes=60),
            jobs=readback.JobMapping("psa-project-{id}"),
        )
        posted = post_planned_journals(
            dsn=clean_ods,
            client=client,
            config=load_config(),
            run_id="post-1",
            settings=EngineSettings(batch_size=3, max_concurrency=2, progress_every_s=3600),
        )
    assert posted["posted"] == 1, posted
    yield {"dsn": clean_ods, "invoice": invoice[0], "journal": journal, "events": events}
    truncate_billing(clean_ods)  # a read-back left behind switches later forecast tests to ERP billing


def test_trace_shows_events_documents_psa_invoice_and_journals(billed: dict[str, Any]) -> None:
    from psa_erp_sync.trace import trace

    with psycopg.connect(billed["dsn"]) as conn:
        (record,) = trace(conn, "psa", f"psa-te-{ENTRY}")
    part = record["billing"]
    first = billed["events"][0]["event_ref"]
    events = {e["event_ref"]: e for e in part["events"]}
    assert set(events) == {first, f"{first}:credit", "time:psa:1:v1c"}
    assert events[first]["state"] == "invoiced" and events[first]["amount_minor"] == 120000
    assert (
        events[f"{first}:credit"]["credits_ref"] == first
        and events[f"{first}:credit"]["amount_minor"] == -120000
    )
    assert events["time:psa:1:v1c"]["amount_minor"] == 90000

    docs = {d["document_ref"]: d for d in part["documents"]}
    invoice = docs[billed["invoice"]]
    assert invoice["doc_type"] == "invoice" and invoice["state"] == "posted" and invoice["erp_internal_id"]
    assert [line["event_ref"] for line in invoice["lines"]] == [first]
    assert invoice["erp"]["status"] == "Open" and invoice["erp"]["internal_id"] == invoice["erp_internal_id"]
    assert [line["amount_minor"] for line in invoice["erp_lines"]] == [120000]
    (memo,) = [d for d in docs.values() if d["doc_type"] == "creditmemo"]
    assert memo["credits_document"] == billed["invoice"] and memo["state"] == "posted"
    assert memo["total_minor"] == 120000 and memo["erp"]["created_from_ref"] == billed["invoice"]
    assert [line["amount_minor"] for line in memo["erp_lines"]] == [120000]  # positive, as the ERP holds it
    (reinvoice,) = [d for d in docs.values() if d["doc_type"] == "invoice" and d is not invoice]
    assert reinvoice["total_minor"] == 90000 and reinvoice["state"] == "posted"
    assert invoice["lineage"] == []  # passes run outside Airflow record no lineage run

    (psa,) = part["psa_invoices"]
    assert (psa["erp_external_id"], psa["psa_number"], psa["psa_state"]) == (
        billed["invoice"],
        "INV-9001",
        "open",
    )
    assert (part["project_ref"], part["period_month"]) == ("102", "2026-10-01")
    (journal,) = part["revenue_journals"]
    assert journal["external_id"] == billed["journal"] and journal["ledger_state"] == "confirmed"
    assert journal["erp_internal_id"] and journal["erp_period"] == "LE-US2-2026-10"
    assert [(j["role"], j["debit_minor"], j["credit_minor"]) for j in journal["lines"]] == [
        ("contract_asset", 150000, 0),
        ("revenue", 0, 150000),
    ]


def test_trace_command_prints_billing_in_text_and_json(billed: dict[str, Any]) -> None:
    env = {**os.environ, "PSA_ERP_SYNC_DSN": billed["dsn"]}
    command = [sys.executable, "-m", "psa_erp_sync.trace", "psa", ENTRY]
    text = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=True).stdout
    assert "6. billing" in text and f"invoice {billed['invoice']}" in text
    assert "creditmemo cm-" in text and f"crediting {billed['invoice']}" in text
    assert "PSA invoice INV-9001" in text and "7. revenue journals of project 102" in text
    assert billed["journal"] in text and "4000 revenue: debit 0 credit 150000" in text
    assert "status Open, total 180000, remaining 60000; this entry's ERP lines: #1 120000" in text
    doc = json.loads(
        subprocess.run(
            [*command, "--json"], capture_output=True, text=True, env=env, timeout=60, check=True
        ).stdout
    )
    (record,) = [t for t in doc if t["kind"] == "time_entry"]
    assert {d["doc_type"] for d in record["billing"]["documents"]} == {"invoice", "creditmemo"}
    assert record["billing"]["revenue_journals"][0]["external_id"] == billed["journal"]
