"""Fixtures of the HR tests: an empty ``hr`` schema, PSA users and Workday workers describing the
same people (``simulators/workday/sample.py``), and clients of the Workday, PSA and ERP simulators."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator

USERS = [
    {
        "id": 201,
        "first_name": "Ada",
        "last_name": "Byron",
        "email": "ada@example.com",
        "cost_rate": "100.00",
        "legal_entity": "LE-US1",
        "practice": "Strategy",
        "employee_id": "E201",
    },
    {
        "id": 202,
        "first_name": "Alan",
        "last_name": "Turing",
        "email": "alan@example.com",
        "cost_rate": "90.00",
        "legal_entity": "LE-US1",
        "practice": "Data",
        "employee_id": "E202",
    },
    {
        "id": 203,
        "first_name": "Grace",
        "last_name": "Hopper",
        "email": "grace@example.com",
        "cost_rate": "80.00",
        "legal_entity": "LE-UK1",
        "practice": "Data",
        "is_active": False,
        "employee_id": "E203",
    },
]
FUTURE_HIRE = {
    "employee_id": "E900",
    "first_name": "Katherine",
    "last_name": "Johnson",
    "email": "katherine@example.com",
    "company": "LE-US2",
    "cost_center": "CC-US2-DAT",
    "hire_date": "2026-12-15",
}
FUTURE_RATE = {"employee_id": "E900", "effective_date": "2026-12-15", "cost_rate": "95.00", "currency": "USD"}


@pytest.fixture
def hr_dsn(clean_ods: str) -> str:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute("TRUNCATE hr.worker_version, hr.worker, hr.cost_rate")
    return clean_ods


@pytest.fixture
def people(
    psa_sim: RunningSimulator, workday_sim: RunningSimulator, erp_sim: RunningSimulator
) -> dict[str, Any]:
    from simulators.workday.sample import from_psa_users

    psa_sim.admin("POST", "/seed", json={"users": USERS})
    seeded = from_psa_users(USERS)
    seeded["workers"].append(FUTURE_HIRE)
    seeded["cost_rates"].append(FUTURE_RATE)
    workday_sim.admin("POST", "/seed", json=seeded)
    erp_sim.admin(
        "POST",
        "/seed",
        json={
            "currencies": [{"external_id": c, "symbol": c, "name": c} for c in ("USD", "GBP")],
            "subsidiaries": [
                {"external_id": "LE-US1", "name": "US East", "country": "US", "currency": "USD"},
                {"external_id": "LE-US2", "name": "US West", "country": "US", "currency": "USD"},
                {"external_id": "LE-UK1", "name": "UK", "country": "GB", "currency": "GBP"},
            ],
        },
    )
    return seeded


@pytest.fixture
def workday_client(workday_sim: RunningSimulator) -> Iterator[Any]:
    from psa_erp_sync.clients.http import RetryPolicy
    from psa_erp_sync.clients.workday import WorkdayClient

    with WorkdayClient(
        base_url=workday_sim.base_url,
        tenant="acme",
        client_id="client",
        client_secret="secret",
        refresh_token="local-workday-refresh-token",
        retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05),
    ) as client:
        yield client


@pytest.fixture
def erp_client(erp_sim: RunningSimulator) -> Iterator[Any]:
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.clients.http import RetryPolicy

    with NetSuiteClient(
        base_url=erp_sim.base_url,
        account_id="A1",
        token="t",
        retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05),
    ) as client:
        yield client
