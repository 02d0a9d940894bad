"""Billing in the forecast, on a small hand-computed case: invoices, a credit memo, a voided
invoice and a payment created in the ERP simulator through its REST API, read back into the ODS,
then a forecast refresh. Checks billed per contract, contract asset / liability per contract (never
netted), and per customer and legal entity: receivables, DSO, unbilled WIP ageing, days to invoice
and revenue leakage. Real PostgreSQL and the ERP simulator over loopback."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from psa_erp_sync.billing import readback
from tests.billing.test_readback import DECEMBER, JOBS, put, truncate_billing
from tests.conftest import RunningSimulator
from tests.simulators.test_erp_sim import BASE_SEED

pytestmark = pytest.mark.integration

AS_OF = date(2026, 12, 31)
US = {"entity": {"externalId": "psa-client-1"}, "job": {"externalId": "psa-project-1"}}


def doc(tran_date: str, *lines: tuple[str, str, str], **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tranDate": tran_date,
        **US,
        "subsidiary": {"externalId": "LE-US1"},
        "currency": {"refName": "USD"},
        "item": {"items": [{"amount": a, "sourceType": t, "sourceId": s} for a, t, s in lines]},
    }
    return body | over


def seed_erp(http: httpx.Client, erp: RunningSimulator) -> None:
    put(
        http,
        "invoice",
        "inv-a",
        doc("2026-11-10", ("1000.00", "timebill", "psa-te-1"), ("500.00", "timebill", "psa-te-2")),
    )
    erp.admin("POST", "/invoices/eid:inv-a/payments", json={"amount": "1000.00", "tranDate": "2026-12-05"})
    put(
        http, "invoice", "inv-b", doc("2026-12-15", ("2000.00", "timebill", "3"))
    )  # a raw PSA id: no ledger needed
    put(
        http,
        "creditmemo",
        "cm-a",
        doc("2026-12-20", ("500.00", "timebill", "psa-te-2"), createdFrom={"externalId": "inv-a"}),
    )
    put(http, "invoice", "inv-void", doc("2026-12-10", ("300.00", "timebill", "psa-te-4")))
    erp.admin("POST", "/invoices/eid:inv-void/void")
    # Three retainer months billed in advance: the line names project 5 (the header's job is project 1).
    put(http, "invoice", "inv-r", doc("2026-12-01", ("3000.00", "retainerperiod", "5:2026-12")))
    put(
        http,
        "invoice",
        "inv-c",
        doc(
            "2026-11-20",
            ("800.00", "milestone", "ms-9"),
            entity={"externalId": "psa-client-3"},
            job={"externalId": "psa-project-4"},
            subsidiary={"externalId": "LE-UK1"},
            currency={"refName": "GBP"},
        ),
    )


# (source id, kind, amount, approved, last PSA update of the approved version, posted to the ERP)
WORK = [
    ("1", "time", 100_000, True, "2026-11-05", True),  # invoiced 2026-11-10: 5 days
    ("2", "time", 50_000, True, "2026-11-06", True),  # invoiced, then credited: unbilled, 55 days
    ("3", "time", 200_000, True, "2026-12-01", True),  # invoiced 2026-12-15: 14 days
    ("4", "time", 30_000, True, "2026-12-05", True),  # its invoice voided: unbilled, 26 days
    ("5", "time", 70_000, True, "2026-12-25", False),  # unbilled, 6 days
    ("6", "time", 40_000, True, "2026-08-15", False),  # unbilled, 138 days
    ("7", "time", 99_000, False, "2026-08-15", False),  # not approved: not WIP
    ("8", "expense", 12_345, True, "2026-10-20", False),  # unbilled, 72 days
]


def seed_ods(conn: psycopg.Connection) -> None:
    for sid, kind, amount, approved, updated, posted in WORK:
        if kind == "time":
            conn.execute(
                "INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref,"
                " project_ref, task_ref, legal_entity, hours, billable, bill_rate_minor, amount_minor, currency,"
                " approved, fingerprint, source_updated_at, record) VALUES ('psa', %s, 'v1', %s, 'u1', '1', 't1',"
                " 'LE-US1', 1, true, %s, %s, 'USD', %s, %s, %s, '{}'::jsonb)",
                (sid, updated, amount, amount, approved, f"fp{sid}", f"{updated}T12:00:00Z"),
            )
        else:
            conn.execute(
                "INSERT INTO canonical.expense_entry (source_system, source_id, version_hash, spent_date, user_ref,"
                " project_ref, legal_entity, category, billable, amount_minor, currency, approved, fingerprint,"
                " source_updated_at, record) VALUES ('psa', %s, 'v1', %s, 'u1', '1', 'LE-US1', 'travel', true, %s,"
                " 'USD', %s, %s, %s, '{}'::jsonb)",
                (sid, updated, amount, approved, f"fp{sid}", f"{updated}T12:00:00Z"),
            )
        if posted:
            conn.execute(
                "INSERT INTO ledger.posting (idempotency_key, record_type, source_system, source_id, source_version,"
                " external_id, action, state, legal_entity, amount_minor, currency)"
                " VALUES (%s, 'timebill', 'psa', %s, 'v1', %s, 'post', 'confirmed', 'LE-US1', %s, 'USD')",
                (f"k{sid}", sid, f"psa-te-{sid}", amount),
            )
    projects = [
        ("1", "USD", "time_and_materials", None, "2026-01-01", "2027-06-30", "LE-US1"),
        ("4", "GBP", "milestone", 500_000, "2026-06-01", "2027-06-30", "LE-UK1"),
        ("5", "USD", "retainer", 1_200_000, "2026-12-01", "2027-11-30", "LE-US1"),
    ]
    for ref, currency, kind, fee, starts, ends, le in projects:
        conn.execute(
            "INSERT INTO forecast.src_project (project_ref, practice, legal_entity, currency, billing_type,"
            " is_active, starts_on, ends_on, hourly_rate_minor, fee_minor) VALUES (%s, 'Strategy', %s, %s, %s,"
            " true, %s, %s, 0, %s)",
            (ref, le, currency, kind, starts, ends, fee),
        )
    conn.execute(
        "INSERT INTO forecast.src_milestone (milestone_id, project_ref, due_date, amount_minor, status, completed_on)"
        " VALUES ('ms-9', '4', '2026-11-15', 100000, 'signed_off', '2026-11-15')"
    )
    conn.execute(
        "INSERT INTO master.erp_record (record_type, external_id, internal_id, version_hash, parent, is_inactive,"
        " body) VALUES ('job', 'psa-project-1', '901', 'h', 'psa-client-1', false, '{}'::jsonb)"
        " ON CONFLICT (erp, record_type, company_code, external_id) DO UPDATE SET parent = EXCLUDED.parent"
    )
    conn.commit()


@pytest.fixture
def seeded(clean_ods: str, erp_sim: RunningSimulator) -> Iterator[str]:
    seed = copy.deepcopy(BASE_SEED)
    seed["accounting_periods"] += DECEMBER
    erp_sim.admin("POST", "/seed", json=seed)
    truncate_billing(clean_ods)
    with httpx.Client(base_url=erp_sim.base_url, headers={"Authorization": "Bearer t"}, timeout=30) as http:
        seed_erp(http, erp_sim)
    from psa_erp_sync.clients.erp import NetSuiteClient

    with (
        psycopg.connect(clean_ods) as conn,
        NetSuiteClient(base_url=erp_sim.base_url, account_id="A1", token="t") as client,
    ):
        seed_ods(conn)
        readback.read_back(conn, client, run_id="rb-1", overlap=timedelta(minutes=60), jobs=JOBS)
    yield clean_ods
    truncate_billing(clean_ods)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM master.erp_record WHERE record_type = 'job' AND external_id = 'psa-project-1'"
        )


def _refresh(dsn: str) -> dict[str, Any]:
    from psa_erp_sync.forecast.refresh import refresh
    from psa_erp_sync.forecast.settings import BillingKpis, load_forecast_settings

    kpis = BillingKpis(dso_period_days=31, leakage_days=20)  # the DSO period: December
    settings = load_forecast_settings().model_copy(update={"billing_kpis": kpis})
    with psycopg.connect(dsn) as conn:
        outcome = refresh(
            conn,
            as_of=AS_OF,
            run_id="fc-1",
            settings=settings,
            scenarios=("base",),
            job_external_id="psa-project-{id}",
        )
        conn.commit()
    return outcome.snapshots["base"]


def test_billed_per_contract_and_asset_or_liability_from_real_billing(seeded: str) -> None:
    snap = _refresh(seeded)
    with psycopg.connect(seeded) as conn:
        rows = conn.execute(
            "SELECT project_ref, billing_type, cum_revenue_minor, cum_billed_minor, contract_asset_minor,"
            " contract_liability_minor FROM forecast.contract_balance WHERE snapshot_id = %s ORDER BY 1",
            (snap["snapshot_id"],),
        ).fetchall()
    assert rows == [
        # T&M: posted time 1+2+3+4 = 3,800.00 recognized; billed inv-a 1,500 + inv-b 2,000 - cm-a 500
        # (the voided invoice and the retainer line, which names project 5, are not project 1's).
        ("1", "time_and_materials", 380_000, 300_000, 80_000, 0),
        # Milestone: 1,000.00 signed off, 800.00 invoiced: a contract asset.
        ("4", "milestone", 100_000, 80_000, 20_000, 0),
        # Retainer 12,000 over 12 months from December: 1,000 recognized, 3,000 billed in advance.
        ("5", "retainer", 100_000, 300_000, 0, 200_000),
    ]


def test_dso_wip_ageing_and_leakage_per_customer_and_legal_entity(seeded: str) -> None:
    snap = _refresh(seeded)
    with psycopg.connect(seeded) as conn:
        cur = conn.execute(
            "SELECT * FROM forecast.billing_kpi WHERE snapshot_id = %s ORDER BY legal_entity, customer_ref",
            (snap["snapshot_id"],),
        )
        names = [d.name for d in cur.description or []]
        kpis = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    for kpi in kpis:
        del kpi["snapshot_id"]
    assert kpis == [
        {
            "legal_entity": "LE-UK1",
            "customer_ref": "psa-client-3",
            "currency": "GBP",
            "receivables_minor": 80_000,
            "billed_in_period_minor": 0,  # billed in November only
            "dso_period_days": 31,
            "dso_days": None,  # nothing billed in the period: undefined, not infinite
            "wip_0_30_minor": 0,
            "wip_31_60_minor": 0,
            "wip_61_90_minor": 0,
            "wip_over_90_minor": 0,
            "unbilled_entries": 0,
            "invoiced_entries": 0,
            "avg_days_to_invoice": None,
            "leakage_days": 20,
            "leakage_entries": 0,
            "leakage_minor": 0,
        },
        {
            "legal_entity": "LE-US1",
            "customer_ref": "psa-client-1",
            "currency": "USD",
            # inv-a 1,500 + inv-b 2,000 + inv-r 3,000 - cm-a 500 - paid 1,000 (inv-void excluded)
            "receivables_minor": 500_000,
            # December (the 31 days ending on the as-of date): inv-r 3,000 + inv-b 2,000 - cm-a 500
            "billed_in_period_minor": 450_000,
            "dso_period_days": 31,
            "dso_days": Decimal("34.4"),  # 5,000 / 4,500 x 31
            "wip_0_30_minor": 100_000,  # te 4 (26 days) + te 5 (6 days)
            "wip_31_60_minor": 50_000,  # te 2 (55 days; its invoice line credited)
            "wip_61_90_minor": 12_345,  # expense 8 (72 days)
            "wip_over_90_minor": 40_000,  # te 6 (138 days)
            "unbilled_entries": 5,
            "invoiced_entries": 2,  # te 1 (5 days), te 3 (14 days)
            "avg_days_to_invoice": Decimal("9.5"),
            "leakage_days": 20,
            "leakage_entries": 4,  # te 2, 4, 6 and expense 8: over 20 days since approval
            "leakage_minor": 132_345,
        },
    ]
    # The KPIs are part of the snapshot: immutable.
    with psycopg.connect(seeded) as conn, pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        conn.execute("UPDATE forecast.billing_kpi SET leakage_minor = 0")


def test_billed_from_erp_replaces_the_schedule_assumptions_for_every_contract_type() -> None:
    """Pure model: with ``billed_from_erp`` the ERP's net billing is taken as is for milestones and
    retainers too (no longer their signed-off / billed-in-advance schedule)."""
    from psa_erp_sync.forecast import model
    from tests.forecast.test_formulas import SETTINGS, _inputs

    inputs = _inputs()
    legacy = model.compute(inputs, SETTINGS, "base").balances.set_index("project_ref")
    assert (legacy.loc["MS1"].cum_billed_minor, legacy.loc["RET1"].cum_billed_minor) == (100_000, 500_000)
    inputs.projects["billed_minor"] = 0
    inputs.projects.loc[inputs.projects.project_ref == "MS1", "billed_minor"] = 150_000
    inputs.billed_from_erp = True
    real = model.compute(inputs, SETTINGS, "base").balances.set_index("project_ref")
    ms, ret = real.loc["MS1"], real.loc["RET1"]
    assert (ms.cum_revenue_minor, ms.cum_billed_minor, ms.contract_liability_minor) == (
        100_000,
        150_000,
        50_000,
    )
    assert (ret.cum_revenue_minor, ret.cum_billed_minor, ret.contract_asset_minor) == (500_000, 0, 500_000)
