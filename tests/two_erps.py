"""Two ERPs for the downstream tests (issue 15, deliverable 6): LE-UK1 on NetSuite until 2026-12-31,
on SAP (company code 2010) from 2027-01-01 (``reverse_and_repost``); LE-US1 and LE-US2 on NetSuite.

:func:`connect_two_erps` writes a config copy with that routing, points ``PSA_ERP_SYNC_CONFIG_DIR``
at it, and sets the Airflow connections of the ODS, the NetSuite simulator (``erp_default``) and the
SAP simulator (``sap_default``, its extra mapping LE-UK1 to company code 2010), both seeded.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator, connect_airflow
from tests.routed_config import routed_config_dir

UK = "LE-UK1"
COMPANY = "2010"
NETSUITE_ONLY = {"effective": [{"erp": "netsuite"}]}
ROUTING = {
    "version": 1,
    "erps": {"netsuite": {"connection": "erp_default"}, "sap": {"connection": "sap_default"}},
    "versions": [
        {
            "version": 1,
            "legal_entities": {
                "LE-US1": NETSUITE_ONLY,
                "LE-US2": NETSUITE_ONLY,
                UK: {
                    "effective": [
                        {"first_day": None, "last_day": "2026-12-31", "erp": "netsuite"},
                        {
                            "first_day": "2027-01-01",
                            "last_day": None,
                            "erp": "sap",
                            "correction_policy": "reverse_and_repost",
                        },
                    ]
                },
            },
        }
    ],
}
# The same, with LE-UK1's December 2026 in a parallel run: NetSuite (its route) the primary, SAP the
# secondary (shadow postings), as in tests/routing/test_cutover_scenario.py.
PARALLEL = copy.deepcopy(ROUTING)
PARALLEL["versions"][0]["legal_entities"][UK]["effective"][1]["parallel_run"] = {
    "first_day": "2026-12-01",
    "last_day": "2026-12-31",
    "primary": "netsuite",
    "secondary": "sap",
}
MONTHS = [("2026-11", "30"), ("2026-12", "31"), ("2027-01", "31"), ("2027-02", "28")]
NETSUITE_SEED = {
    "subsidiaries": [
        {
            "external_id": UK,
            "name": "Northwind UK Ltd",
            "country": "GB",
            "currency": "GBP",
            "is_inactive": False,
        }
    ],
    "currencies": [{"symbol": "GBP", "name": "GBP"}],
    "employees": [{"external_id": "psa-user-7", "subsidiary": UK, "is_inactive": False}],
    "customers": [
        {
            "external_id": "psa-client-1",
            "company_name": "Acme Ltd",
            "subsidiary": UK,
            "currency": "GBP",
            "is_inactive": False,
        }
    ],
    "jobs": [
        {
            "external_id": "psa-project-42",
            "name": "Project 42",
            "customer": "psa-client-1",
            "subsidiary": UK,
            "currency": "GBP",
            "billing_type": "time_and_materials",
            "contract_value": "100000.00",
            "is_inactive": False,
        }
    ],
    "accounting_periods": [
        {
            "external_id": f"{UK}-{m}",
            "subsidiary": UK,
            "period_name": m,
            "start_date": f"{m}-01",
            "end_date": f"{m}-{d}",
            "closed": False,
            "all_locked": False,
            "ar_locked": False,
            "ap_locked": False,
        }
        for m, d in MONTHS
    ],
}
SAP_SEED = {
    "company_codes": [{"company_code": COMPANY, "currency": "GBP"}],
    "work_agreements": [
        {"external_id": "psa-user-7", "company_code": COMPANY, "person_work_agreement": "50000007"}
    ],
    "posting_periods": [
        {"company_code": COMPANY, "fiscal_year": y, "period": m, "open": True}
        for y in (2026, 2027)
        for m in range(1, 13)
    ],
}
SAP_EXTRA = {"company_codes": {UK: COMPANY}, "activity_type": "T001"}


def connect_two_erps(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    dsn: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    *,
    seed: bool = True,
    routing: dict[str, Any] | None = None,
) -> Path:
    """The routing above (or ``routing``, e.g. :data:`PARALLEL`) in a config copy, and the
    connections of the ODS and both ERPs."""
    config_dir = routed_config_dir(tmp_path / "config", routing=routing or ROUTING)
    monkeypatch.setenv("PSA_ERP_SYNC_CONFIG_DIR", str(config_dir))
    connect_airflow(monkeypatch, dsn, erp=erp_sim)
    sap_conn = {
        "conn_type": "http",
        "host": sap_sim.base_url,
        "login": "PSA_COMM",
        "password": "secret",
        "extra": SAP_EXTRA,
    }
    monkeypatch.setenv("AIRFLOW_CONN_SAP_DEFAULT", json.dumps(sap_conn))
    if seed:
        erp_sim.admin("POST", "/seed", json=NETSUITE_SEED)
        sap_sim.admin("POST", "/seed", json=SAP_SEED)
    return config_dir


def time_entry(
    conn: psycopg.Connection, source_id: int, day: str, version: str, hours: str, rate_minor: int = 10_000
) -> None:
    """An approved LE-UK1 time entry of user 7 on project 42, in GBP."""
    amount = int(Decimal(hours) * rate_minor)
    conn.execute(
        """
        INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref, project_ref,
            legal_entity, hours, billable, bill_rate_minor, amount_minor, currency, approved, fingerprint,
            source_updated_at, record)
        VALUES ('psa', %s, %s, %s, '7', '42', %s, %s, true, %s, %s, 'GBP', true, %s, now(), '{}'::jsonb)
        ON CONFLICT (source_system, source_id) DO UPDATE SET version_hash = EXCLUDED.version_hash,
            spent_date = EXCLUDED.spent_date, hours = EXCLUDED.hours, amount_minor = EXCLUDED.amount_minor,
            bill_rate_minor = EXCLUDED.bill_rate_minor, approved = true
        """,
        (str(source_id), version, day, UK, hours, rate_minor, amount, version),
    )


def expense_entry(conn: psycopg.Connection, source_id: int, day: str, amount_minor: int) -> None:
    """An approved LE-UK1 travel expense of user 7 on project 42, in GBP."""
    conn.execute(
        "INSERT INTO canonical.expense_entry (source_system, source_id, version_hash, spent_date, user_ref,"
        " project_ref, legal_entity, category, billable, amount_minor, currency, approved, fingerprint,"
        " source_updated_at, record) VALUES ('psa', %s, 'v1', %s, '7', '42', %s, 'travel', true, %s, 'GBP',"
        " true, %s, now(), '{}'::jsonb)",
        (str(source_id), day, UK, amount_minor, f"fp{source_id}"),
    )


def post(record_type: str, run_id: str) -> dict[str, Any]:
    """One run of the posting task (every routed ERP)."""
    from psa_erp_sync.operators.posting import IdempotentPostingOperator

    op = IdempotentPostingOperator(task_id=f"post_{record_type}", record_type=record_type)
    result = op.execute({"ti": None, "run_id": run_id})  # type: ignore[arg-type]
    return result["outcome"]  # type: ignore[no-any-return]
