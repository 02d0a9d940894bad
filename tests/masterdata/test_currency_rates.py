"""The ERP's currency rates mirrored into ``master.currency_rate`` (real PostgreSQL, the ERP
simulator over loopback): new and corrected rates written, an unchanged re-read writes nothing, a
rate the ERP no longer has removed, and an empty answer removes nothing."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration


def _rate(day: str, value: str) -> dict[str, Any]:
    return {
        "baseCurrency": {"refName": "USD"},
        "transactionCurrency": {"refName": "GBP"},
        "exchangeRate": value,
        "effectiveDate": day,
    }


def test_rates_mirror_the_erp(clean_master: str, erp_sim: RunningSimulator, erp_client: Any) -> None:
    from psa_erp_sync.masterdata.fx import sync_currency_rates

    erp_sim.admin(
        "POST",
        "/seed",
        json={"currencies": [{"symbol": "USD", "name": "US Dollar"}, {"symbol": "GBP", "name": "Pound"}]},
    )

    def synced() -> tuple[dict[str, int], dict[date, Decimal]]:
        with psycopg.connect(clean_master) as conn:
            counts = sync_currency_rates(conn, erp_client)
            rows = conn.execute("SELECT effective_date, exchange_rate FROM master.currency_rate").fetchall()
        return counts, dict(rows)

    assert synced() == ({"read": 0, "written": 0, "removed": 0, "invalid": 0}, {})
    for day, value in (("2026-11-01", "1.2650000000"), ("2026-11-02", "1.27")):
        erp_client.upsert("currencyrate", f"GBP-USD-{day}", _rate(day, value))
    counts, rows = synced()
    assert counts == {"read": 2, "written": 2, "removed": 0, "invalid": 0}
    assert rows == {date(2026, 11, 1): Decimal("1.2650000000"), date(2026, 11, 2): Decimal("1.27")}
    assert synced()[0]["written"] == 0  # re-read: nothing changed
    erp_client.upsert("currencyrate", "GBP-USD-2026-11-02", _rate("2026-11-02", "1.2712345678"))
    erp_client.delete("currencyrate", "GBP-USD-2026-11-01")
    counts, rows = synced()
    assert counts == {"read": 1, "written": 1, "removed": 1, "invalid": 0}
    assert rows == {date(2026, 11, 2): Decimal("1.2712345678")}
    erp_client.delete("currencyrate", "GBP-USD-2026-11-02")
    assert synced() == ({"read": 0, "written": 0, "removed": 0, "invalid": 0}, rows)  # empty: kept
