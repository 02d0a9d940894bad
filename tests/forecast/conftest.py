"""A small seeded firm in the PSA and CRM simulators, extracted into the ODS, plus posted actuals."""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator

TODAY = date(2026, 11, 9)
AS_OF = date(2026, 11, 9)


def seed_posted_actuals(dsn: str, firm: Any) -> int:
    """What the posting flow would have written for the firm's approved, billable month: canonical
    time entries and their confirmed ERP postings (a share of the firm's month, enough for actuals)."""
    from simulators.firm.generator import iter_time_entries

    projects = {p["id"]: p for p in firm.psa["projects"]}
    rows = []
    for chunk in iter_time_entries(firm):
        for te in chunk:
            project = projects.get(te["project_id"])
            if (
                not te["is_closed"]
                or project is None
                or not project["is_active"]
                or te["billable_rate"] is None
            ):
                continue
            if te["spent_date"] > AS_OF.isoformat():
                continue
            cents = int(te["billable_rate"].replace(".", ""))
            quarters = int(te["hours"].replace(".", "")) // 25
            rows.append((te, project, cents * quarters // 4))
    with psycopg.connect(dsn) as conn, conn.transaction():
        for te, project, amount in rows:
            sid = str(te["id"])
            conn.execute(
                "INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref,"
                " project_ref, task_ref, legal_entity, hours, billable, bill_rate_minor, amount_minor, currency,"
                " approved, fingerprint, source_updated_at, record) VALUES ('psa', %s, 'v1', %s, %s, %s, %s, %s,"
                " %s, true, %s, %s, %s, true, %s, %s, '{}'::jsonb)",
                (
                    sid,
                    te["spent_date"],
                    str(te["user_id"]),
                    str(te["project_id"]),
                    str(te["task_id"]),
                    project["legal_entity"],
                    te["hours"],
                    int(te["billable_rate"].replace(".", "")),
                    amount,
                    project["currency"],
                    f"fp{sid}",
                    te["updated_at"],
                ),
            )
            conn.execute(
                "INSERT INTO ledger.posting (idempotency_key, record_type, source_system, source_id, source_version,"
                " external_id, action, state, legal_entity, amount_minor, currency)"
                " VALUES (%s, 'timebill', 'psa', %s, 'v1', %s, 'post', 'confirmed', %s, %s, %s)",
                (f"k{sid}", sid, f"psa-te-{sid}", project["legal_entity"], amount, project["currency"]),
            )
    return len(rows)


@pytest.fixture
def seeded(
    clean_ods: str, psa_sim: RunningSimulator, crm_sim: RunningSimulator, planning_sim: RunningSimulator
) -> dict[str, Any]:
    """The firm in the simulators, its PSA/CRM planning data extracted, its month posted."""
    from psa_erp_sync.clients.crm import CrmClient
    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.forecast import inputs
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    firm = generate_firm(
        FirmSpec(seed=11, consultants=20, customers=12, projects=24, opportunities=12, today=TODAY)
    )
    load_firm(firm, psa_url=psa_sim.base_url, erp_url=None, crm_url=crm_sim.base_url)
    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
    posted = seed_posted_actuals(clean_ods, firm)
    with (
        psycopg.connect(clean_ods) as conn,
        HarvestClient(base_url=psa_sim.base_url, token="t", account_id="1") as psa,
        CrmClient(base_url=crm_sim.base_url, token="t") as crm,
    ):
        extracted = inputs.extract_psa(conn, psa, run_id="seed", config=load_config())
        extracted |= inputs.extract_crm(conn, crm, run_id="seed")
    return {
        "firm": firm,
        "dsn": clean_ods,
        "posted": posted,
        "extracted": extracted,
        "planning": planning_sim,
    }
