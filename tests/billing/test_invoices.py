"""Invoices and credit memos from billing events, through the posting ledger and engine, against the
ERP simulator over loopback (docs/billing.md "Invoices exactly once")."""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
import pytest

from tests.billing.invoicing import (
    Firm,
    assert_billed_exactly_once,
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


def _ours(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("amountRemaining", "status", "lastModifiedDate")}


def test_document_refs_and_keys_are_deterministic() -> None:
    from psa_erp_sync.billing import invoices
    from psa_erp_sync.config import load_config
    from psa_erp_sync.posting.periods import PeriodBook

    firm = Firm()
    events = [
        e | {"credits_document": None, "credits_event": None, "credits_line": None} for e in firm.events(5)
    ]
    periods = PeriodBook.from_rows(
        [
            {
                "externalid": "LE-US2-2026-10",
                "subsidiary": "LE-US2",
                "startdate": "2026-10-01",
                "enddate": "2026-10-31",
            }
        ]
    )
    group = [e for e in events if e["group_key"] == events[0]["group_key"]]
    one = invoices.plan_document(load_config(), periods, "invoice", group)
    two = invoices.plan_document(load_config(), periods, "invoice", list(reversed(group)))
    assert (
        one.document_ref
        == two.document_ref
        == invoices.document_ref("invoice", [e["event_ref"] for e in group])
    )
    assert one.posting.idempotency_key == two.posting.idempotency_key
    assert (
        one.document_ref.startswith("inv-")
        and f"key:{one.posting.idempotency_key[:16]}" in one.posting.payload["memo"]
    )
    other = invoices.plan_document(load_config(), periods, "invoice", [*group, events[1]])
    assert other.document_ref != one.document_ref  # other members, another document


def test_invoices_then_credit_memo_after_a_correction_and_reruns_change_nothing(
    billing_ods: str, erp_sim: RunningSimulator
) -> None:
    firm = Firm(customers=3, projects=4)
    firm.seed_erp(erp_sim)
    insert_events(billing_ods, firm.events(60))
    first = run_pass(billing_ods, erp_sim, "inv-1")
    assert first.still_pending == 0 and first.documents == {
        "posted": first.plan["invoice"]["documents"]["invoice"]
    }
    figures = assert_billed_exactly_once(billing_ods)
    assert figures["lines"] == 60 and figures["credit_memos"] == 0
    sent = {d["externalId"]: _ours(d) for d in erp_documents(billing_ods, "invoice")}

    again = run_pass(billing_ods, erp_sim, "inv-2")  # a rerun: nothing new, nothing sent
    assert (
        again.plan["invoice"]["documents"]["invoice"] == 0 and again.outcome["invoice"]["erp_requests"] == 0
    )

    # One invoiced line corrected, one unapproved: credit lines (and the new version) are billed
    # without touching the sent invoices.
    with psycopg.connect(billing_ods) as conn:
        a, b = (r for (r,) in conn.execute("SELECT event_ref FROM billing.event ORDER BY event_ref LIMIT 2"))
    correct(billing_ods, a, 4242)
    correct(billing_ods, b, None)
    third = run_pass(billing_ods, erp_sim, "inv-3")
    assert third.plan["creditmemo"]["lines"]["creditmemo"] == 2
    assert third.plan["invoice"]["lines"]["invoice"] == 1  # the corrected line's new version
    # the sent invoices are unchanged (only the ERP's own fields move: amount remaining, status)
    assert {
        d["externalId"]: _ours(d) for d in erp_documents(billing_ods, "invoice") if d["externalId"] in sent
    } == sent
    memos = erp_documents(billing_ods, "creditmemo")
    assert memos and all(float(m["total"]) > 0 and m["createdFrom"] for m in memos)
    credited = {line["custcol_psa_credits_event"] for m in memos for line in m["item"]["items"]}
    assert credited == {a, b}
    figures = assert_billed_exactly_once(billing_ods)
    assert figures["credit_memos"] == len(memos)


def test_closed_period_moves_or_parks_per_entity_policy(billing_ods: str, erp_sim: RunningSimulator) -> None:
    firm = Firm(customers=4, projects=4)  # customers 1..4: LE-US1, LE-US2, LE-UK1 (GBP), LE-UK1 (EUR)
    firm.seed_erp(erp_sim)
    for entity in ("LE-US1", "LE-UK1"):
        erp_sim.admin("POST", f"/periods/{entity}-2026-10", json={"closed": True, "arLocked": True})
    insert_events(
        billing_ods,
        [
            firm.event(str(n), p, date(2026, 10, 5), amount=1000 * n)
            for n, p in enumerate(sorted(firm.projects), 1)
        ],
    )
    result = run_pass(billing_ods, erp_sim, "closed")
    with psycopg.connect(billing_ods) as conn:
        docs = dict(
            conn.execute(
                "SELECT legal_entity || ':' || currency, state || '@' || coalesce(period, '') FROM billing.document"
            )
        )
        parked = conn.execute(
            "SELECT count(*) FROM exceptions.item WHERE kind = 'parked' AND domain = 'billing' AND reason_code = 'PERIOD_CLOSED'"
        ).fetchone()
    assert docs == {
        "LE-US1:USD": "posted@LE-US1-2026-11",  # post_to_first_open: the first open period
        "LE-US2:USD": "posted@LE-US2-2026-10",
        "LE-UK1:GBP": "parked@LE-UK1-2026-10",  # park: finance decides
        "LE-UK1:EUR": "parked@LE-UK1-2026-10",
    }, docs
    assert parked == (2,) and result.plan["invoice"]["parked"] == 2
    moved = [d for d in erp_documents(billing_ods, "invoice") if d["subsidiary"]["externalId"] == "LE-US1"]
    assert "orig-period:LE-US1-2026-10" in moved[0]["memo"]


def test_a_document_the_erp_refuses_is_a_billing_dead_letter(
    billing_ods: str, erp_sim: RunningSimulator
) -> None:
    firm = Firm(customers=2, projects=2)
    firm.seed_erp(erp_sim)
    firm.projects["999"] = ("1", "LE-US1", "USD")  # no such job in the ERP
    insert_events(
        billing_ods,
        [
            firm.event("1", "101", date(2026, 10, 5), amount=5000),
            firm.event("2", "999", date(2026, 10, 6), amount=7000),
        ],
    )
    result = run_pass(billing_ods, erp_sim, "refused")
    assert result.outcome["invoice"]["rejected"] == 1 and result.still_pending == 0
    assert result.documents == {"posted": 1, "rejected": 1}
    with psycopg.connect(billing_ods) as conn:
        letters = conn.execute(
            "SELECT domain, record_type, reason_code FROM exceptions.item WHERE kind = 'dead_letter'"
        ).fetchall()
        states = conn.execute("SELECT DISTINCT state FROM billing.event").fetchall()
    assert letters == [("billing", "invoice", "INVALID_KEY_OR_REF")]
    assert states == [("invoiced",)]  # the refused document keeps its line: it is billed once, later


def test_a_period_closing_mid_pass_gets_the_entity_policy(
    billing_ods: str, erp_sim: RunningSimulator
) -> None:
    import threading
    import time

    firm = Firm(customers=4, projects=8)  # LE-US1 (moves to the first open period) and LE-UK1 (parks)
    firm.seed_erp(erp_sim)
    insert_events(billing_ods, firm.events(600, months=("2026-10",)))
    erp_sim.admin(
        "PUT",
        "/faults",
        json=[{"id": "slow", "action": "latency", "path_regex": "/batch$", "latency_ms": 150}],
    )
    closed_at: list[int] = []

    def close_when_under_way() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with psycopg.connect(billing_ods) as conn:
                row = conn.execute("SELECT count(*) FROM ledger.posting WHERE state = 'confirmed'").fetchone()
            if row and row[0] >= 6:
                break
            time.sleep(0.02)
        closed_at.append(1)
        for entity in ("LE-US1", "LE-US2", "LE-UK1"):
            erp_sim.admin("POST", f"/periods/{entity}-2026-10", json={"closed": True, "arLocked": True})

    closer = threading.Thread(target=close_when_under_way)
    closer.start()
    result = run_pass(billing_ods, erp_sim, "close-mid-pass", batch_size=2, max_lines=10)
    closer.join()
    erp_sim.admin("DELETE", "/faults")
    assert closed_at and result.outcome["invoice"]["period_closed_replanned"] > 0, result.outcome
    assert result.still_pending == 0
    with psycopg.connect(billing_ods) as conn:
        rows = conn.execute(
            "SELECT d.legal_entity, d.state, d.period, n.payload->>'memo' FROM billing.document d"
            " JOIN ledger.attempt a ON a.outcome = 'period-closed'"
            " JOIN ledger.posting r ON r.idempotency_key = a.idempotency_key AND r.source_id = d.document_ref"
            " JOIN LATERAL (SELECT * FROM ledger.posting_full m WHERE m.source_id = d.document_ref"
            "               ORDER BY seq DESC LIMIT 1) n ON true"
        ).fetchall()
        letters = conn.execute("SELECT count(*) FROM exceptions.item WHERE kind = 'dead_letter'").fetchone()
    assert len(rows) == result.outcome["invoice"]["period_closed_replanned"]
    for entity, state, period, memo in rows:
        if entity == "LE-UK1":  # policy: park
            assert state == "parked", (entity, state)
        else:  # post_to_first_open: in the ERP in November, the original period in the memo
            assert (state, period) == (
                "posted",
                f"{entity}-2026-11",
            ) and f"orig-period:{entity}-2026-10" in memo
    assert {e for e, *_ in rows} >= {"LE-UK1"} and len({e for e, *_ in rows}) >= 2, rows
    assert letters == (0,)  # a closed period is never a dead letter
