"""Fixtures of the master-data tests: a clean ODS including the ``master`` schema, clients of the
simulators over loopback, and a small hand-made ERP master data set with deliberate dirt."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator

HOSTILE_NAME = "O'Brien'); DROP TABLE record;--"
TODAY = date(2026, 11, 9)
UNICODE_NAME = "Ünïcødé Ståhl 株式会社 Ltd"


@pytest.fixture
def clean_master(clean_ods: str) -> str:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables WHERE schemaname = 'master'"
        ).fetchall()
        conn.execute("TRUNCATE " + ", ".join(r[0] for r in rows) + " RESTART IDENTITY CASCADE")
    return clean_ods


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


@pytest.fixture
def crm_client(crm_sim: RunningSimulator) -> Iterator[Any]:
    from psa_erp_sync.clients.crm import CrmClient
    from psa_erp_sync.clients.http import RetryPolicy

    with CrmClient(
        base_url=crm_sim.base_url, token="t", retry=RetryPolicy(max_attempts=3, base_delay_s=0.01)
    ) as client:
        yield client


MASTER = {
    "subsidiaries": [
        {"external_id": "LE-US1", "name": "US East", "country": "US", "currency": "USD"},
        {"external_id": "LE-UK1", "name": "UK", "country": "GB", "currency": "GBP"},
        {"external_id": "LE-OLD", "name": "Closed", "country": "US", "currency": "USD", "is_inactive": True},
    ],
    "currencies": [{"symbol": "USD", "name": "US Dollar"}, {"symbol": "GBP", "name": "Pound"}],
    "tax_codes": [
        {"external_id": "TAX-US-EXEMPT", "code": "US-EXEMPT", "country": "US", "rate": "0.00"},
        {"external_id": "TAX-GB-S20", "code": "GB-S20", "country": "GB", "rate": "20.00"},
    ],
    "customers": [
        {
            "external_id": "psa-client-1",
            "company_name": "Good Co",
            "subsidiary": "LE-US1",
            "currency": "USD",
            "tax_code": "TAX-US-EXEMPT",
        },
        {
            "external_id": "psa-client-2",
            "company_name": "Sleepy Co",
            "subsidiary": "LE-US1",
            "currency": "USD",
            "tax_code": "TAX-US-EXEMPT",
            "is_inactive": True,
        },
        {
            "external_id": "psa-client-3",
            "company_name": "Acme Ltd",
            "subsidiary": "LE-US1",
            "currency": "USD",
            "tax_code": "TAX-US-EXEMPT",
        },
        {
            "external_id": "psa-client-4",
            "company_name": "Acme Ltd",
            "subsidiary": "LE-US1",
            "currency": "USD",
            "tax_code": "TAX-US-EXEMPT",
        },
        {
            "external_id": "psa-client-5",
            "company_name": "Taxing Co",
            "subsidiary": "LE-US1",
            "currency": "USD",
            "tax_code": "TAX-GB-S20",
        },
        {
            "external_id": "psa-client-6",
            "company_name": UNICODE_NAME,
            "subsidiary": "LE-UK1",
            "currency": "GBP",
            "tax_code": "TAX-GB-S20",
        },
        {
            "external_id": "psa-client-7",
            "company_name": HOSTILE_NAME,
            "subsidiary": "LE-US1",
            "currency": "USD",
            "tax_code": "TAX-US-EXEMPT",
        },
    ],
    "jobs": [
        {
            "external_id": "psa-project-10",
            "name": "Live job",
            "customer": "psa-client-1",
            "subsidiary": "LE-US1",
            "currency": "USD",
            "contract_value": "1000.00",
        },
        {
            "external_id": "psa-project-11",
            "name": "Dead job",
            "customer": "psa-client-1",
            "subsidiary": "LE-US1",
            "currency": "USD",
            "contract_value": "1000.00",
            "is_inactive": True,
        },
    ],
}


@pytest.fixture
def erp_master(erp_sim: RunningSimulator) -> dict[str, Any]:
    erp_sim.admin("POST", "/seed", json=MASTER)
    return MASTER


def seeded_firm(
    psa_sim: RunningSimulator, erp_sim: RunningSimulator, crm_sim: RunningSimulator, **spec: Any
) -> Any:
    """A small generated firm loaded into the PSA, ERP and CRM simulators (no resource schedule)."""
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    firm = generate_firm(FirmSpec(consultants=6, opportunities=3, today=TODAY, **spec))
    load_firm(
        firm,
        psa_url=psa_sim.base_url,
        erp_url=erp_sim.base_url,
        crm_url=crm_sim.base_url,
        include_schedule=False,
    )
    return firm
