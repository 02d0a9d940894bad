"""Billing events against a real PostgreSQL: each contract type, reruns, versions before and after
invoicing, retainers per period, cycles and grouping from config."""

from __future__ import annotations

from datetime import date

import psycopg
import pytest

from psa_erp_sync.billing.events import EventsOutcome, build_billing_events
from tests.billing.conftest import entry, events, invoice, milestone, project, settings

AS_OF = date(2026, 11, 30)


def build(conn: psycopg.Connection, run_id: str = "r1", **config: object) -> EventsOutcome:
    outcome = build_billing_events(conn, config=settings(**config), as_of=AS_OF, run_id=run_id)
    conn.commit()
    return outcome


def test_time_and_materials_bills_posted_billable_approved_time_and_expenses(ods: psycopg.Connection) -> None:
    project(ods, "10")
    entry(ods, "t1", "10", hours="2.50", rate=20000)  # 50,000
    entry(ods, "t2", "10", billable=False)
    entry(ods, "t3", "10", approved=False)
    entry(ods, "t4", "10", posted=False)  # the ERP does not hold it yet: held
    entry(ods, "t5", "10", deleted=True)
    entry(ods, "e1", "10", kind="expense", amount=12345)
    entry(ods, "e2", "10", kind="expense", amount=999, billable=False)
    outcome = build(ods)
    assert outcome.created == {"time": 1, "expense": 1}
    assert outcome.held == {"time": 1}
    rows = {r["source_id"]: r for r in events(ods)}
    assert set(rows) == {"t1", "e1"}
    t1 = rows["t1"]
    assert (t1["amount_minor"], t1["quantity"], t1["rate_minor"]) == (50000, 2.5, 20000)
    assert (t1["kind"], t1["billing_type"], t1["customer_ref"], t1["state"]) == (
        "time",
        "time_and_materials",
        "psa-client-1",
        "ready",
    )
    assert t1["event_ref"] == "time:psa:t1:v1"
    assert t1["cycle"] == "monthly:2026-11"
    assert (
        t1["group_key"]
        == "customer=psa-client-1|project=10|legal_entity=LE-US1|currency=USD|cycle=monthly:2026-11"
    )
    assert rows["e1"]["amount_minor"] == 12345 and rows["e1"]["quantity"] is None


def test_contract_types_decide_what_bills(ods: psycopg.Connection) -> None:
    project(ods, "ff", "fixed_fee")
    project(ods, "ms", "milestone")
    project(ods, "tm", "time_and_materials")
    entry(ods, "t-ff", "ff")  # fixed fee: time is not billed, the milestones are
    entry(ods, "e-ff", "ff", kind="expense", amount=500)  # billable expenses are, on any contract
    milestone(ods, "m1", "ff", 400000)
    milestone(ods, "m2", "ms", 100000, status="completed")  # done, not signed off: not yet
    milestone(ods, "m3", "ms", 250000, completed_on=date(2026, 11, 20))
    milestone(ods, "m4", "tm", 1000)  # a T&M project bills no milestones
    outcome = build(ods)
    assert outcome.created == {"expense": 1, "milestone": 2}
    ms = {r["source_id"]: r for r in events(ods) if r["kind"] == "milestone"}
    assert ms["m1"]["billing_type"] == "fixed_fee" and ms["m1"]["amount_minor"] == 400000
    assert ms["m3"]["event_date"] == date(2026, 11, 20)  # the sign-off day


def test_rerun_creates_nothing(ods: psycopg.Connection) -> None:
    project(ods, "10")
    project(ods, "20", "milestone")
    entry(ods, "t1", "10")
    milestone(ods, "m1", "20", 5000)
    first = build(ods)
    before = events(ods)
    second = build(ods, run_id="r2")
    assert first.total("created") == 2
    assert second.total("created") == second.total("withdrawn") == second.total("credited") == 0
    assert second.unchanged == {"time": 1, "milestone": 1}
    assert events(ods) == before


def test_correction_before_invoicing_withdraws_the_ready_event(ods: psycopg.Connection) -> None:
    project(ods, "10")
    entry(ods, "t1", "10", hours="2.00", rate=10000)
    build(ods)
    entry(ods, "t1", "10", version="v2", hours="3.00", rate=10000, posted=False)
    held = build(ods, run_id="r2")  # v2 is not in the ERP yet: the stale ready event goes at once
    assert held.withdrawn == {"time": 1} and held.held == {"time": 1} and not held.created
    entry(ods, "t1", "10", version="v2", hours="3.00", rate=10000)  # now posted
    posted = build(ods, run_id="r3")
    assert posted.created == {"time": 1}
    rows = events(ods)
    assert [(r["source_version"], r["state"], r["amount_minor"]) for r in rows] == [
        ("v1", "withdrawn", 20000),
        ("v2", "ready", 30000),
    ]
    assert not any(r["credits_ref"] for r in rows)


def test_a_new_version_with_the_same_billed_content_changes_nothing(ods: psycopg.Connection) -> None:
    project(ods, "10")
    entry(ods, "t1", "10")
    build(ods)
    invoice(ods)
    entry(ods, "t1", "10", version="v2")  # e.g. the PSA marked it billed: same hours, rate, date
    outcome = build(ods, run_id="r2")
    assert outcome.total("created") == outcome.total("credited") == 0
    assert outcome.unchanged == {"time": 1}


def test_correction_after_invoicing_credits_once_then_bills_the_new_version(ods: psycopg.Connection) -> None:
    project(ods, "10")
    entry(ods, "t1", "10", hours="2.00", rate=10000)
    build(ods)
    assert invoice(ods, "INV-1") == 1
    entry(ods, "t1", "10", version="v2", hours="1.50", rate=10000, posted=False)
    waiting = build(ods, run_id="r2")  # the ERP holds v1 still: the invoice stands for now
    assert waiting.total("credited") == 0 and waiting.held == {"time": 1}
    entry(ods, "t1", "10", version="v2", hours="1.50", rate=10000)
    corrected = build(ods, run_id="r3")
    again = build(ods, run_id="r4")
    assert corrected.credited == {"time": 1} and corrected.created == {"time": 1}
    assert again.total("credited") == again.total("created") == 0
    rows = events(ods)
    assert [(r["event_ref"], r["state"], r["amount_minor"], r["credits_ref"]) for r in rows] == [
        ("time:psa:t1:v1", "invoiced", 20000, None),
        ("time:psa:t1:v1:credit", "ready", -20000, "time:psa:t1:v1"),
        ("time:psa:t1:v2", "ready", 15000, None),
    ]
    credit = rows[1]
    assert credit["quantity"] == -2 and credit["group_key"].endswith("cycle=monthly:2026-11")


@pytest.mark.parametrize("change", ["unapproved", "deleted", "non_billable"])
def test_unapproval_after_invoicing_credits_and_bills_nothing_new(
    ods: psycopg.Connection, change: str
) -> None:
    project(ods, "10")
    entry(ods, "t1", "10")
    build(ods)
    invoice(ods)
    entry(
        ods,
        "t1",
        "10",
        version="v2",
        posted=False,
        approved=change != "unapproved",
        deleted=change == "deleted",
        billable=change != "non_billable",
    )
    outcome = build(ods, run_id="r2")
    assert outcome.credited == {"time": 1} and outcome.total("created") == 0
    build(ods, run_id="r3")
    rows = events(ods)
    assert [r["amount_minor"] for r in rows] == [30000, -30000]
    assert sum(r["amount_minor"] for r in rows) == 0


def test_reapproval_of_a_version_billed_before_gets_a_fresh_reference(ods: psycopg.Connection) -> None:
    project(ods, "20", "milestone")
    milestone(ods, "m1", "20", 5000)
    build(ods)
    invoice(ods)
    milestone(ods, "m1", "20", 5000, status="completed")  # sign-off withdrawn in the PSA
    build(ods, run_id="r2")
    milestone(ods, "m1", "20", 5000)  # signed off again, same amount and day: the same version
    build(ods, run_id="r3")
    rows = events(ods)
    assert [r["event_ref"].rsplit(":", 1)[-1] for r in rows][1:] == ["credit", "r1"]
    assert sum(r["amount_minor"] for r in rows) == 5000


def test_no_customer_in_master_data_holds_the_source(ods: psycopg.Connection) -> None:
    project(ods, "10", customer=None)
    entry(ods, "t1", "10")
    entry(ods, "t2", "99")  # a project the PSA extract does not know
    outcome = build(ods)
    assert outcome.held == {"time": 2} and not events(ods)


def test_retainers_per_period_from_config_with_a_mid_month_start(ods: psycopg.Connection) -> None:
    project(ods, "ret", "retainer")
    retainers = {
        "ret": {"amount_minor": 300000, "currency": "USD", "starts_on": "2026-09-16", "ends_on": "2026-12-10"}
    }
    outcome = build(ods, retainers=retainers)
    assert outcome.created == {"retainer": 3}  # Sep (from the 16th), Oct, Nov; Dec not started by as_of
    rows = events(ods)
    assert [(r["source_id"], r["event_date"], r["amount_minor"]) for r in rows] == [
        ("ret:2026-09", date(2026, 9, 16), 150000),  # 15 of 30 days
        ("ret:2026-10", date(2026, 10, 1), 300000),
        ("ret:2026-11", date(2026, 11, 1), 300000),
    ]
    assert {r["source_system"] for r in rows} == {"config"}
    assert build(ods, run_id="r2", retainers=retainers).total("created") == 0
    december = build_billing_events(
        ods, config=settings(retainers=retainers), as_of=date(2026, 12, 31), run_id="r3"
    )
    assert december.created == {"retainer": 1}
    assert events(ods)[-1]["amount_minor"] == 96774  # 10 of 31 days, half-even
    earlier = build_billing_events(
        ods, config=settings(retainers=retainers), as_of=date(2026, 10, 5), run_id="r4"
    )
    assert earlier.total("withdrawn") == 0  # periods after as_of are not judged


def test_cycles_and_grouping_come_from_config(ods: psycopg.Connection) -> None:
    project(ods, "10", customer="psa-client-1")
    project(ods, "11", customer="psa-client-2", legal_entity="LE-UK1", currency="GBP")
    project(ods, "12", customer="psa-client-3")
    entry(ods, "a", "10", day=date(2026, 11, 18))
    entry(ods, "b", "11", day=date(2026, 11, 18), legal_entity="LE-UK1", currency="GBP")
    entry(ods, "c", "12", day=date(2026, 11, 18))
    build(
        ods,
        cycles={
            "default": "monthly",
            "legal_entities": {"LE-UK1": "semi_monthly"},
            "customers": {"psa-client-1": "weekly"},
        },
        grouping=["currency", "customer", "legal_entity"],
    )
    rows = {r["source_id"]: r for r in events(ods)}
    assert rows["a"]["cycle"] == "weekly:2026-W47"
    assert rows["b"]["cycle"] == "semi_monthly:2026-11-2"
    assert rows["c"]["cycle"] == "monthly:2026-11"
    assert rows["a"]["group_key"] == "customer=psa-client-1|legal_entity=LE-US1|currency=USD"
    assert rows["b"]["group_key"] == "customer=psa-client-2|legal_entity=LE-UK1|currency=GBP"
