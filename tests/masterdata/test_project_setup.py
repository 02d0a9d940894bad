"""Project setup against the CRM, ERP and PSA simulators: closed-won -> validate -> ERP job ->
PSA project -> cross-references; re-runs create nothing twice, a crash between the ERP and PSA
steps (including the PSA committing but the answer being lost) is completed by the next run, and
a deal rejected by validation is provisioned once its owner fixes the ERP."""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
import pytest

from psa_erp_sync.masterdata import setup
from psa_erp_sync.masterdata.validation import Candidate, ErpLookup, record_verdicts, validate_batch
from tests.conftest import RunningSimulator
from tests.masterdata.conftest import seeded_firm

pytestmark = pytest.mark.integration

TODAY = date(2026, 11, 9)


@pytest.fixture
def world(
    erp_sim: RunningSimulator, psa_sim: RunningSimulator, crm_sim: RunningSimulator, clean_master: str
) -> dict[str, Any]:
    firm = seeded_firm(psa_sim, erp_sim, crm_sim, seed=7, customers=8, projects=12)
    inactive = set(firm.master_dirt["erp.customer_inactive"])
    unknown = set(firm.master_dirt["erp.customer_unknown"])
    accounts = {a["erp_customer_external_id"]: a for a in firm.crm["accounts"]}
    good = next(a for e, a in accounts.items() if int(e.split("-")[-1]) not in inactive | unknown)
    sleepy = next(a for e, a in accounts.items() if int(e.split("-")[-1]) in inactive)
    return {
        "firm": firm,
        "good": good,
        "sleepy": sleepy,
        "dsn": clean_master,
        "crm": crm_sim,
        "erp": erp_sim,
        "psa": psa_sim,
    }


def _new_deal(crm: RunningSimulator, opp_id: int, account: dict[str, Any], amount: str = "120000.00") -> None:
    currency = "GBP" if account["legal_entity"] == "LE-UK1" else "USD"
    crm.admin(
        "POST",
        "/seed",
        json={
            "opportunities": [
                {
                    "id": opp_id,
                    "account_id": account["id"],
                    "name": f"Deal {opp_id} \u2013 \u03a9 \u201cquoted\u201d <b>'; --",
                    "stage": "Negotiation",
                    "amount": amount,
                    "currency": currency,
                    "expected_start": "2026-12-01",
                    "duration_months": 6,
                    "legal_entity": account["legal_entity"],
                    "practice": "Strategy",
                    "billing_type": "time_and_materials",
                }
            ]
        },
    )
    crm.admin("POST", f"/opportunities/{opp_id}/close_won", json={})


def _run(
    world: dict[str, Any], crm: Any, erp: Any, psa: Any, run_id: str, extra: tuple[int, ...] = ()
) -> dict[str, Any]:
    from psa_erp_sync.config import load_config

    ownership = load_config().ownership
    with psycopg.connect(world["dsn"]) as conn:
        candidates = setup.collect(conn, crm, run_id=run_id, extra_ids=extra)
        verdicts = validate_batch([Candidate.model_validate(c) for c in candidates], ErpLookup(erp))
        with conn.transaction():
            record_verdicts(
                conn,
                verdicts,
                domain="project_setup",
                record_type="opportunity",
                source_system="crm",
                owner_for=ownership.owner_for,
                run_id=run_id,
            )
        return setup.provision(
            conn,
            erp,
            psa,
            run_id=run_id,
            verdicts=[v.as_dict() for v in verdicts],
            owner_for=ownership.owner_for,
        )


def _jobs(dsn: str, ext: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT body FROM sim_erp.record WHERE type = 'job' AND external_id = %s", (ext,)
            )
        ]


def _projects(dsn: str, code: str) -> list[tuple[int, Any, Any, Any]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT id, cost_budget, hourly_rate, client_id FROM sim_psa.projects WHERE code = %s", (code,)
        ).fetchall()


def test_closed_won_is_provisioned_once(
    world: dict[str, Any], crm_client: Any, erp_client: Any, psa_client: Any
) -> None:
    _new_deal(world["crm"], 9001, world["good"])
    counts = _run(world, crm_client, erp_client, psa_client, "r1")
    assert counts == {
        "erp_jobs": 1,
        "psa_created": 1,
        "psa_found": 0,
        "linked": 1,
        "rejected": 0,
        "failed": 0,
    }
    [job] = _jobs(world["dsn"], "crm-opp-9001")
    [(project_id, budget, rate, client_id)] = _projects(world["dsn"], "crm-opp-9001")
    assert job["custentity_psa_project_id"] == str(project_id)  # cross-reference on the ERP side
    assert (
        job["contractValue"] == "120000.00"
        and job["parent"]["externalId"] == world["good"]["erp_customer_external_id"]
    )
    assert str(budget) == "120000.00" and rate is not None  # budget and rate card on the PSA side
    assert f"psa-client-{client_id}" == world["good"]["erp_customer_external_id"]
    # Running again (the event was consumed; the id passed explicitly too) creates nothing.
    again = _run(world, crm_client, erp_client, psa_client, "r2", extra=(9001,))
    assert again == {"erp_jobs": 0, "psa_created": 0, "psa_found": 0, "linked": 0, "rejected": 0, "failed": 0}
    assert len(_jobs(world["dsn"], "crm-opp-9001")) == 1 and len(_projects(world["dsn"], "crm-opp-9001")) == 1


@pytest.mark.parametrize("fault", ["status", "drop_after_commit"])
def test_crash_between_erp_and_psa_resumes_without_duplicates(
    world: dict[str, Any], crm_client: Any, erp_client: Any, psa_client: Any, fault: str
) -> None:
    from psa_erp_sync.clients.psa import PsaApiError

    _new_deal(world["crm"], 9002, world["good"])
    # The PSA fails the create: before doing anything (503), or after committing it (connection
    # dropped: the ambiguous failure, the project exists but we never heard its id).
    world["psa"].admin(
        "PUT",
        "/faults",
        json=[
            {"id": "crash", "action": fault, "status": 503, "method": "POST", "path_regex": "^/v2/projects$"}
        ],
    )
    with pytest.raises(PsaApiError):
        _run(world, crm_client, erp_client, psa_client, "r1")
    world["psa"].admin("DELETE", "/faults")
    with psycopg.connect(world["dsn"]) as conn:
        assert conn.execute(
            "SELECT state FROM master.project_setup WHERE opportunity_id = 9002"
        ).fetchone() == ("erp_job",)
    assert len(_jobs(world["dsn"], "crm-opp-9002")) == 1
    assert len(_projects(world["dsn"], "crm-opp-9002")) == (1 if fault == "drop_after_commit" else 0)

    counts = _run(world, crm_client, erp_client, psa_client, "r2")
    assert counts["erp_jobs"] == 0 and counts["linked"] == 1
    assert (counts["psa_found"], counts["psa_created"]) == (
        (1, 0) if fault == "drop_after_commit" else (0, 1)
    )
    [(project_id, *_)] = _projects(world["dsn"], "crm-opp-9002")
    [job] = _jobs(world["dsn"], "crm-opp-9002")
    assert job["custentity_psa_project_id"] == str(project_id)


def test_rejected_deal_is_not_activated_until_the_owner_fixes_the_erp(
    world: dict[str, Any], crm_client: Any, erp_client: Any, psa_client: Any
) -> None:
    sleepy = world["sleepy"]
    _new_deal(world["crm"], 9003, sleepy)
    counts = _run(world, crm_client, erp_client, psa_client, "r1")
    assert counts["rejected"] == 1 and counts["erp_jobs"] == 0
    assert _jobs(world["dsn"], "crm-opp-9003") == [] and _projects(world["dsn"], "crm-opp-9003") == []
    with psycopg.connect(world["dsn"]) as conn:
        assert conn.execute(
            "SELECT reason_code, owner, status FROM exceptions.item WHERE source_id = 'opp-9003'"
        ).fetchall() == [("CUSTOMER_INACTIVE", "sales-operations", "open")]
    # Still inactive: the next run (no new event) re-validates and rejects again.
    assert _run(world, crm_client, erp_client, psa_client, "r2")["rejected"] == 1
    # The owner reactivates the customer in the ERP; the next run provisions the deal.
    erp_client.upsert("customer", sleepy["erp_customer_external_id"], {"isInactive": False})
    counts = _run(world, crm_client, erp_client, psa_client, "r3")
    assert counts["linked"] == 1 and counts["rejected"] == 0
    with psycopg.connect(world["dsn"]) as conn:
        assert conn.execute("SELECT status FROM exceptions.item WHERE source_id = 'opp-9003'").fetchall() == [
            ("resolved",)
        ]


def test_a_refused_create_is_quarantined_without_stopping_the_others(
    world: dict[str, Any], crm_client: Any, erp_client: Any, psa_client: Any
) -> None:
    good = world["good"]
    # A customer the ERP knows (valid) but the PSA has no client for: the PSA refuses the project.
    erp_client.upsert(
        "customer",
        "psa-client-99999",
        {
            "companyName": "ERP-only Co",
            "subsidiary": {"externalId": good["legal_entity"]},
            "currency": {"refName": "GBP" if good["legal_entity"] == "LE-UK1" else "USD"},
        },
    )
    world["crm"].admin(
        "POST",
        "/seed",
        json={
            "accounts": [
                {
                    "id": 999,
                    "name": "ERP-only Co",
                    "legal_entity": good["legal_entity"],
                    "erp_customer_external_id": "psa-client-99999",
                }
            ]
        },
    )
    _new_deal(world["crm"], 9004, {**good, "id": 999})
    _new_deal(world["crm"], 9005, good)
    counts = _run(world, crm_client, erp_client, psa_client, "r1")
    assert (counts["failed"], counts["linked"]) == (1, 1)
    with psycopg.connect(world["dsn"]) as conn:
        item = conn.execute(
            "SELECT reason_code, detail, status FROM exceptions.item WHERE source_id = 'opp-9004'"
        ).fetchone()
        state = conn.execute("SELECT state FROM master.project_setup WHERE opportunity_id = 9004").fetchone()
    assert item == ("PROVISIONING_REJECTED", {"codes": ["PSA_422"]}, "open")
    assert state == ("erp_job",)
    assert _projects(world["dsn"], "crm-opp-9004") == [] and len(_projects(world["dsn"], "crm-opp-9005")) == 1
