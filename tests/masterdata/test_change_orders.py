"""Change orders against the CRM, ERP and PSA simulators: an approved change order updates the
ERP contract value and the PSA budget (once, however often it is applied); approved change orders
absent from the ERP are reported as revenue leakage, count and amount, matching the dirt the firm
generator injected, and go to the exception queue."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from psa_erp_sync.masterdata import change_orders
from tests.conftest import RunningSimulator
from tests.masterdata.conftest import seeded_firm

pytestmark = pytest.mark.integration

TODAY = date(2026, 11, 9)


@pytest.fixture
def world(
    erp_sim: RunningSimulator, psa_sim: RunningSimulator, crm_sim: RunningSimulator, clean_master: str
) -> dict[str, Any]:
    firm = seeded_firm(psa_sim, erp_sim, crm_sim, seed=11, customers=12, projects=40)
    return {"firm": firm, "dsn": clean_master, "crm": crm_sim}


def _expected_leakage(firm: Any) -> tuple[set[int], dict[str, Decimal]]:
    """What the generator made leak: approved change orders left out of existing ERP jobs."""
    jobs = {j["external_id"] for j in firm.erp["jobs"]}
    opp_project = {o["id"]: o["psa_project_id"] for o in firm.crm["opportunities"]}
    leaked = set(firm.master_dirt["crm.change_order_missing_in_erp"])
    ids: set[int] = set()
    amounts: dict[str, Decimal] = defaultdict(Decimal)
    for co in firm.crm["change_orders"]:
        if co["id"] in leaked and f"psa-project-{opp_project[co['opportunity_id']]}" in jobs:
            ids.add(co["id"])
            amounts[co["currency"]] += Decimal(co["amount_delta"])
    return ids, dict(amounts)


def _open_leaks(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {
            r[0]
            for r in conn.execute(
                "SELECT source_id FROM exceptions.item WHERE kind = 'leakage' AND status = 'open'"
            )
        }


def test_leakage_matches_the_injected_dirt(
    world: dict[str, Any], crm_client: Any, erp_client: Any, psa_client: Any
) -> None:
    ids, amounts = _expected_leakage(world["firm"])
    assert ids, "seed 11 must leak at least one change order"
    with psycopg.connect(world["dsn"]) as conn:
        report = change_orders.reconcile(
            conn, crm_client, erp_client, psa_client, run_id="r1", owner="sales-operations"
        )
    assert report["leaked_change_orders"] == len(ids)
    assert report["leaked_amount"] == {cur: f"{amount:.2f}" for cur, amount in sorted(amounts.items())}
    assert report["by_attribution"]["unexplained"] == 0
    assert _open_leaks(world["dsn"]) == {str(i) for i in ids}
    missing = len(world["firm"].master_dirt["erp.job_missing"])
    assert report["jobs_missing"] == missing
    with psycopg.connect(world["dsn"]) as conn:
        assert conn.execute(
            "SELECT leaked_count, jobs_missing FROM master.leakage_run WHERE run_id = 'r1'"
        ).fetchone() == (
            len(ids),
            missing,
        )
        owners = {
            r[0] for r in conn.execute("SELECT DISTINCT owner FROM exceptions.item WHERE kind = 'leakage'")
        }
    assert owners == {"sales-operations"}


def test_approved_change_order_updates_erp_and_psa_once_and_clears_leakage(
    world: dict[str, Any], crm_client: Any, erp_client: Any, psa_client: Any
) -> None:
    firm = world["firm"]
    leaked_ids, _ = _expected_leakage(firm)
    leaked = next(co for co in firm.crm["change_orders"] if co["id"] in leaked_ids)
    opp = next(o for o in firm.crm["opportunities"] if o["id"] == leaked["opportunity_id"])
    job = f"psa-project-{opp['psa_project_id']}"
    # Sales approves a new change order on the same opportunity: the CRM emits the event.
    world["crm"].admin(
        "POST", "/change_orders", json={"opportunity_id": opp["id"], "amount_delta": "2500.00"}
    )
    with psycopg.connect(world["dsn"]) as conn:
        first = change_orders.apply_approved(conn, crm_client, erp_client, psa_client, run_id="r1")
    assert first == {"events": 1, "opportunities_updated": 1, "without_job": 0}
    approved = [
        co
        for co in firm.crm["change_orders"]
        if co["opportunity_id"] == opp["id"] and co["status"] == "approved"
    ]
    expected = (
        Decimal(opp["amount"]) + sum(Decimal(co["amount_delta"]) for co in approved) + Decimal("2500.00")
    )
    with psycopg.connect(world["dsn"]) as conn:
        body = conn.execute(
            "SELECT body FROM sim_erp.record WHERE type = 'job' AND external_id = %s", (job,)
        ).fetchone()[0]
        budget = conn.execute(
            "SELECT cost_budget FROM sim_psa.projects WHERE id = %s", (opp["psa_project_id"],)
        ).fetchone()[0]
    assert Decimal(body["contractValue"]) == expected == Decimal(budget)
    # Applying again (a redelivered event, a retried task) changes nothing.
    world["crm"].admin("POST", "/events/redeliver", json={"seqs": [1]})
    with psycopg.connect(world["dsn"]) as conn:
        again = change_orders.apply_approved(conn, crm_client, erp_client, psa_client, run_id="r2")
        body2 = conn.execute(
            "SELECT body FROM sim_erp.record WHERE type = 'job' AND external_id = %s", (job,)
        ).fetchone()[0]
    assert again["events"] == 1 and Decimal(body2["contractValue"]) == expected
    # The leaked change order of that opportunity is now in the ERP: its leakage item resolves.
    with psycopg.connect(world["dsn"]) as conn:
        report = change_orders.reconcile(
            conn, crm_client, erp_client, psa_client, run_id="r3", owner="sales-operations"
        )
    assert str(leaked["id"]) not in _open_leaks(world["dsn"])
    assert report["leaked_change_orders"] == len(leaked_ids - {co["id"] for co in approved})
