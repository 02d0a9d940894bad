"""PSA-side revenue leakage against the CRM, ERP and PSA simulators: a project budget raised in the
PSA above the ERP contract value with no approved CRM change order behind it is leakage (count,
amount, an open exception item for the change-order owner) until the gap closes; a budget raised by
an approved change order is not; projects without a money budget or not set up by us are ignored;
hostile and unreadable PSA payloads neither break the run nor leak into the queue."""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
import pytest

from psa_erp_sync.masterdata import change_orders, setup
from psa_erp_sync.masterdata.validation import Candidate, ErpLookup, record_verdicts, validate_batch
from tests.conftest import RunningSimulator
from tests.masterdata.conftest import HOSTILE_NAME, UNICODE_NAME, seeded_firm

pytestmark = pytest.mark.integration

TODAY = date(2026, 11, 9)


@pytest.fixture
def world(
    erp_sim: RunningSimulator, psa_sim: RunningSimulator, crm_sim: RunningSimulator, clean_master: str
) -> dict[str, Any]:
    firm = seeded_firm(psa_sim, erp_sim, crm_sim, seed=7, customers=8, projects=12)
    bad = set(firm.master_dirt["erp.customer_inactive"]) | set(firm.master_dirt["erp.customer_unknown"])
    good = next(
        a for a in firm.crm["accounts"] if int(a["erp_customer_external_id"].split("-")[-1]) not in bad
    )
    return {"firm": firm, "good": good, "dsn": clean_master, "crm": crm_sim}


def _owner() -> str:
    from psa_erp_sync.config import load_config

    return load_config().authority.owner_of("change_order")


def _provision(world: dict[str, Any], crm: Any, erp: Any, psa: Any, *opp_ids: int) -> dict[int, int]:
    """Close-win deals and run project setup; returns the PSA project id of each deal."""
    from psa_erp_sync.config import load_config

    account = world["good"]
    currency = "GBP" if account["legal_entity"] == "LE-UK1" else "USD"
    world["crm"].admin(
        "POST",
        "/seed",
        json={
            "opportunities": [
                {
                    "id": opp_id,
                    "account_id": account["id"],
                    "name": f"Deal {opp_id}",
                    "stage": "Negotiation",
                    "amount": "120000.00",
                    "currency": currency,
                    "expected_start": "2026-12-01",
                    "duration_months": 6,
                    "legal_entity": account["legal_entity"],
                    "practice": "Strategy",
                    "billing_type": "time_and_materials",
                }
                for opp_id in opp_ids
            ]
        },
    )
    for opp_id in opp_ids:
        world["crm"].admin("POST", f"/opportunities/{opp_id}/close_won", json={})
    owner_for = load_config().ownership.owner_for
    with psycopg.connect(world["dsn"]) as conn:
        candidates = setup.collect(conn, crm, run_id="setup", extra_ids=())
        verdicts = validate_batch([Candidate.model_validate(c) for c in candidates], ErpLookup(erp))
        with conn.transaction():
            record_verdicts(
                conn,
                verdicts,
                domain="project_setup",
                record_type="opportunity",
                source_system="crm",
                owner_for=owner_for,
                run_id="setup",
            )
        counts = setup.provision(
            conn, erp, psa, run_id="setup", verdicts=[v.as_dict() for v in verdicts], owner_for=owner_for
        )
        assert counts["linked"] == len(opp_ids)
        rows = conn.execute(
            "SELECT opportunity_id, psa_project_id FROM master.project_setup WHERE opportunity_id = ANY(%s)",
            (list(opp_ids),),
        ).fetchall()
    world["currency"] = currency
    return {int(o): int(p) for o, p in rows}


def _reconcile(world: dict[str, Any], crm: Any, erp: Any, psa: Any, run_id: str) -> dict[str, Any]:
    with psycopg.connect(world["dsn"]) as conn:
        return change_orders.reconcile(conn, crm, erp, psa, run_id=run_id, owner=_owner())


def _psa_items(dsn: str, kind: str = "leakage") -> dict[str, tuple[str, str, str, dict[str, Any]]]:
    """PSA-side exception items of a kind: source id -> (status, reason, owner, detail)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT source_id, status, reason_code, owner, detail FROM exceptions.item"
            " WHERE kind = %s AND source_system = 'psa' AND record_type = 'project' AND domain = 'change_order'",
            (kind,),
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def test_psa_budget_raised_without_a_change_order_is_leakage_until_the_gap_closes(
    world: dict[str, Any], crm_client: Any, erp_client: Any, psa_client: Any
) -> None:
    projects = _provision(world, crm_client, erp_client, psa_client, 9101)
    pid, cur = projects[9101], world["currency"]
    before = _reconcile(world, crm_client, erp_client, psa_client, "r1")
    assert before["psa_projects_checked"] == 1 and before["psa_leaked_projects"] == 0
    assert before["by_source"]["psa"] == {"count": 0, "amount": {}}
    # Delivery raises the budget in the PSA; nobody raises a change order in the CRM.
    psa_client.update_project(pid, {"cost_budget": "135000.50"})
    report = _reconcile(world, crm_client, erp_client, psa_client, "r2")
    assert report["psa_leaked_projects"] == 1
    assert report["psa_leaked_amount"] == {cur: "15000.50"}
    assert report["by_source"]["psa"] == {"count": 1, "amount": {cur: "15000.50"}}
    # The CRM side is unchanged by it.
    assert report["by_source"]["crm"] == {
        "count": before["leaked_change_orders"],
        "amount": before["leaked_amount"],
    }
    [item] = _psa_items(world["dsn"]).items()
    assert item[0] == str(pid)
    status, reason, owner, detail = item[1]
    assert (status, reason, owner) == ("open", "REVENUE_LEAKAGE", _owner())
    assert detail == {
        "opportunity_id": 9101,
        "job": "crm-opp-9101",
        "amount": "15000.50",
        "currency": cur,
        "attribution": "psa_budget",
        "psa_budget": "135000.50",
        "erp_contract_value": "120000.00",
    }
    with psycopg.connect(world["dsn"]) as conn:
        run = conn.execute(
            "SELECT leaked_count, amounts, psa_leaked_count, psa_amounts FROM master.leakage_run WHERE run_id = 'r2'"
        ).fetchone()
    assert run == (report["leaked_change_orders"], report["leaked_amount"], 1, {cur: "15000.50"})
    # Part of the gap closes (finance raises the ERP contract value): the item stays, smaller.
    erp_client.upsert("job", "crm-opp-9101", {"contractValue": "130000.00"})
    partly = _reconcile(world, crm_client, erp_client, psa_client, "r3")
    assert partly["psa_leaked_amount"] == {cur: "5000.50"}
    assert _psa_items(world["dsn"])[str(pid)][0] == "open"
    assert _psa_items(world["dsn"])[str(pid)][3]["amount"] == "5000.50"
    # The gap closes: the item resolves and the run reports no PSA leakage.
    erp_client.upsert("job", "crm-opp-9101", {"contractValue": "135000.50"})
    closed = _reconcile(world, crm_client, erp_client, psa_client, "r4")
    assert closed["psa_leaked_projects"] == 0 and closed["psa_leaked_amount"] == {}
    assert _psa_items(world["dsn"])[str(pid)][0] == "resolved"


def test_budget_raised_by_an_approved_change_order_is_not_psa_leakage(
    world: dict[str, Any], crm_client: Any, erp_client: Any, psa_client: Any
) -> None:
    projects = _provision(world, crm_client, erp_client, psa_client, 9201, 9202)
    cur = world["currency"]
    # 9201: sales approves a change order and apply_approved writes it to the ERP and the PSA.
    world["crm"].admin("POST", "/change_orders", json={"opportunity_id": 9201, "amount_delta": "2500.00"})
    with psycopg.connect(world["dsn"]) as conn:
        applied = change_orders.apply_approved(conn, crm_client, erp_client, psa_client, run_id="a1")
    assert applied["opportunities_updated"] >= 1
    with psycopg.connect(world["dsn"]) as conn:
        budget = conn.execute(
            "SELECT cost_budget FROM sim_psa.projects WHERE id = %s", (projects[9201],)
        ).fetchone()[0]
    assert str(budget) == "122500.00"  # the PSA budget did go up
    # 9202: a change order is approved in the CRM and delivery raises the PSA budget by hand, past it;
    # the ERP never hears of either. The approved change order is the CRM side's leakage; only the
    # excess beyond it is the PSA side's.
    world["crm"].admin("POST", "/change_orders", json={"opportunity_id": 9202, "amount_delta": "4000.00"})
    psa_client.update_project(projects[9202], {"cost_budget": "125000.00"})
    report = _reconcile(world, crm_client, erp_client, psa_client, "r1")
    items = _psa_items(world["dsn"])
    assert str(projects[9201]) not in items
    assert report["psa_leaked_projects"] == 1 and report["psa_leaked_amount"] == {cur: "1000.00"}
    assert items[str(projects[9202])][3]["amount"] == "1000.00"
    with psycopg.connect(world["dsn"]) as conn:
        crm_side = conn.execute(
            "SELECT detail->>'amount' FROM exceptions.item WHERE kind = 'leakage' AND source_system = 'crm'"
            " AND status = 'open' AND (detail->>'opportunity_id')::int = 9202"
        ).fetchall()
    assert crm_side == [("4000.00",)]
    # Once applied, the ERP holds the change order; the PSA excess over it is still leakage.
    with psycopg.connect(world["dsn"]) as conn:
        change_orders.apply_approved(conn, crm_client, erp_client, psa_client, run_id="a2")
    psa_client.update_project(projects[9202], {"cost_budget": "125000.00"})
    again = _reconcile(world, crm_client, erp_client, psa_client, "r2")
    assert again["psa_leaked_amount"] == {cur: "1000.00"}


def test_projects_without_a_money_budget_or_not_ours_are_ignored_in_one_list_read(
    world: dict[str, Any], crm_client: Any, erp_client: Any, psa_client: Any
) -> None:
    projects = _provision(world, crm_client, erp_client, psa_client, 9301, 9302)
    # 9301 is budgeted in hours now (its old money budget stays in the field, as in Harvest);
    # 9302 has no budget at all.
    psa_client.update_project(
        projects[9301], {"budget_by": "project", "budget": "800", "cost_budget": "999999.00"}
    )
    psa_client.update_project(projects[9302], {"budget_by": "none", "cost_budget": None})
    # A project the firm had before us (not set up by project_setup), with a big money budget.
    theirs = next(p["id"] for p in world["firm"].psa["projects"] if p["id"] not in projects.values())
    psa_client.update_project(theirs, {"budget_by": "project_cost", "cost_budget": "99999999.00"})
    pages = psa_client.pages_fetched
    report = _reconcile(world, crm_client, erp_client, psa_client, "r1")
    assert psa_client.pages_fetched - pages == 1  # one list call, not one call per project
    assert report["psa_projects_checked"] == 0
    assert report["psa_leaked_projects"] == 0 and _psa_items(world["dsn"]) == {}
    assert report["psa_unchecked"] == {
        "PSA_PROJECT_MISSING": 0,
        "PSA_PROJECT_INVALID": 0,
        "PSA_CURRENCY_MISMATCH": 0,
    }


def test_hostile_and_unreadable_psa_payloads(
    world: dict[str, Any], crm_client: Any, erp_client: Any, psa_client: Any
) -> None:
    projects = _provision(world, crm_client, erp_client, psa_client, 9401, 9402)
    cur = world["currency"]
    # Hostile and unicode text in the fields we do not compare: the leak is still found, and no
    # text of the project reaches the exception queue.
    psa_client.update_project(
        projects[9401],
        {"name": UNICODE_NAME, "notes": HOSTILE_NAME + " \u202e\u200b\ufeff", "cost_budget": "120000.01"},
    )
    # A linked project whose payload no longer validates (an unknown billing type), and one of the
    # firm's own projects with the same garbage: ours is reported, theirs never looked at.
    theirs = next(p["id"] for p in world["firm"].psa["projects"] if p["id"] not in projects.values())
    with psycopg.connect(world["dsn"]) as conn:
        conn.execute(
            "UPDATE sim_psa.projects SET billing_type = %s WHERE id = ANY(%s)",
            (HOSTILE_NAME, [projects[9402], theirs]),
        )
    report = _reconcile(world, crm_client, erp_client, psa_client, "r1")
    assert report["psa_leaked_projects"] == 1 and report["psa_leaked_amount"] == {cur: "0.01"}
    assert report["psa_unchecked"]["PSA_PROJECT_INVALID"] == 1
    leak = _psa_items(world["dsn"])[str(projects[9401])]
    assert leak[0] == "open"
    invalid = _psa_items(world["dsn"], "reconciliation")
    assert set(invalid) == {str(projects[9402])}
    status, reason, owner, detail = invalid[str(projects[9402])]
    assert (status, reason, owner) == ("open", "PSA_PROJECT_INVALID", _owner())
    assert detail == {"errors": [{"field": "billing_type", "type": "literal_error"}]}
    text = repr([leak, invalid])
    assert UNICODE_NAME not in text and "DROP TABLE" not in text
    # The PSA payload is fixed: the reconciliation item resolves.
    with psycopg.connect(world["dsn"]) as conn:
        conn.execute(
            "UPDATE sim_psa.projects SET billing_type = 'fixed_fee' WHERE id = ANY(%s)",
            ([projects[9402], theirs],),
        )
    _reconcile(world, crm_client, erp_client, psa_client, "r2")
    assert _psa_items(world["dsn"], "reconciliation")[str(projects[9402])][0] == "resolved"


def test_linked_projects_that_cannot_be_compared_are_reported_not_skipped(
    world: dict[str, Any], crm_client: Any, erp_client: Any, psa_client: Any
) -> None:
    projects = _provision(world, crm_client, erp_client, psa_client, 9501, 9502)
    other = "EUR" if world["currency"] != "EUR" else "USD"
    for pid in projects.values():
        psa_client.update_project(pid, {"cost_budget": "150000.00"})
    with psycopg.connect(world["dsn"]) as conn:
        # 9501's project is gone from the PSA; 9502's is kept in another currency than the deal.
        conn.execute("DELETE FROM sim_psa.projects WHERE id = %s", (projects[9501],))
        conn.execute("UPDATE sim_psa.projects SET currency = %s WHERE id = %s", (other, projects[9502]))
    report = _reconcile(world, crm_client, erp_client, psa_client, "r1")
    assert report["psa_projects_checked"] == 0 and report["psa_leaked_projects"] == 0
    assert report["psa_unchecked"] == {
        "PSA_PROJECT_MISSING": 1,
        "PSA_PROJECT_INVALID": 0,
        "PSA_CURRENCY_MISMATCH": 1,
    }
    items = _psa_items(world["dsn"], "reconciliation")
    assert {k: v[:3] for k, v in items.items()} == {
        str(projects[9501]): ("open", "PSA_PROJECT_MISSING", _owner()),
        str(projects[9502]): ("open", "PSA_CURRENCY_MISMATCH", _owner()),
    }
    # Back in the deal's currency, 9502 compares again: its mismatch resolves and its leak shows.
    with psycopg.connect(world["dsn"]) as conn:
        conn.execute(
            "UPDATE sim_psa.projects SET currency = %s WHERE id = %s", (world["currency"], projects[9502])
        )
    again = _reconcile(world, crm_client, erp_client, psa_client, "r2")
    assert again["psa_leaked_projects"] == 1 and again["psa_leaked_amount"] == {world["currency"]: "30000.00"}
    assert _psa_items(world["dsn"], "reconciliation")[str(projects[9502])][0] == "resolved"
    assert _psa_items(world["dsn"], "reconciliation")[str(projects[9501])][0] == "open"
