"""The ERP simulator books foreign-currency time and expenses as NetSuite does: in the transaction
currency with ``exchangeRate`` to the subsidiary's base currency, the rate table's for ``tranDate``
when the client sends none (1 in the base currency), a client's own rate kept as sent, and refused
when no rate exists. Over loopback against real PostgreSQL."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.simulators.test_erp_billing import AUTH, codes, get, put, suiteql
from tests.simulators.test_erp_sim import BASE_SEED

pytestmark = pytest.mark.integration

# A USD job of the GBP subsidiary LE-UK1 (a UK entity serving a US customer in USD).
USD_JOB = {
    "external_id": "psa-project-5",
    "name": "P5",
    "customer": "psa-client-3",
    "subsidiary": "LE-UK1",
    "currency": "USD",
    "billing_type": "time_and_materials",
    "contract_value": None,
    "is_inactive": False,
}


@pytest.fixture
def http(erp_sim: RunningSimulator) -> Iterator[httpx.Client]:
    seed = copy.deepcopy(BASE_SEED)
    seed["jobs"].append(USD_JOB)
    erp_sim.admin("POST", "/seed", json=seed)
    with httpx.Client(base_url=erp_sim.base_url, headers=AUTH, timeout=30) as client:
        yield client


def timebill(
    job: str = "psa-project-5", sub: str = "LE-UK1", cur: str = "USD", **over: Any
) -> dict[str, Any]:
    employee = "psa-user-2" if sub == "LE-UK1" else "psa-user-1"
    body = {
        "tranDate": "2026-11-12",
        "employee": {"externalId": employee},
        "customer": {"externalId": job},
        "subsidiary": {"externalId": sub},
        "hours": "2.00",
        "rate": "100.00",
        "currency": {"refName": cur},
        "isBillable": True,
    }
    return body | over


def rate(day: str, value: str) -> dict[str, Any]:
    return {
        "baseCurrency": {"refName": "GBP"},
        "transactionCurrency": {"refName": "USD"},
        "exchangeRate": value,
        "effectiveDate": day,
    }


def test_a_foreign_currency_timebill_needs_a_rate_and_takes_the_tables_for_its_date(
    http: httpx.Client,
) -> None:
    # No USD -> GBP rate yet: refused, naming the pair and the date.
    refused = put(http, "timebill", "fx-1", timebill())
    assert codes(refused) == [("INVALID_FLD_VALUE", "exchangeRate")]
    assert "No exchange rate of USD to GBP on 2026-11-12" in refused.text
    for day, value in (("2026-11-01", "0.7900000000"), ("2026-11-15", "0.8100000000")):
        assert put(http, "currencyrate", f"USD-GBP-{day}", rate(day, value)).status_code == 204
    assert put(http, "timebill", "fx-1", timebill()).status_code == 204
    assert get(http, "timebill", "fx-1")["exchangeRate"] == "0.7900000000"  # in force on the 12th
    # A client's own rate is kept as sent (NetSuite lets a transaction override the table).
    assert put(http, "timebill", "fx-2", timebill(exchangeRate="0.8")).status_code == 204
    assert get(http, "timebill", "fx-2")["exchangeRate"] == "0.8"
    assert codes(put(http, "timebill", "fx-3", timebill(exchangeRate="0"))) == [
        ("INVALID_FLD_VALUE", "exchangeRate")
    ]
    # The subsidiary's own currency books at 1, and SuiteQL reads the column.
    assert put(http, "timebill", "dom-1", timebill("psa-project-1", "LE-US1")).status_code == 204
    rows = {
        r["externalid"]: r["exchangerate"]
        for r in suiteql(http, "SELECT externalid, exchangerate FROM timebill")
    }
    assert rows == {"fx-1": "0.7900000000", "fx-2": "0.8", "dom-1": "1"}


def test_an_expense_in_a_foreign_currency_takes_the_rate_too(http: httpx.Client) -> None:
    assert put(http, "currencyrate", "USD-GBP-2026-11-01", rate("2026-11-01", "0.79")).status_code == 204
    body = {k: v for k, v in timebill().items() if k not in ("hours", "rate")} | {
        "amount": "12.50",
        "category": "Hotel",
    }
    assert put(http, "expensereport", "fx-e1", body).status_code == 204
    assert get(http, "expensereport", "fx-e1")["exchangeRate"] == "0.79"
