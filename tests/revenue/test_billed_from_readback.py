"""Revenue recognition takes what the ERP billed from the billing read-back (``billing.erp_invoice``):
a contract billed beyond what it earned holds a contract liability (deferred revenue), one billed
below it a contract asset, never netted across contracts; before the first read-back billing is
unknown and every balance stays an asset (the forecast does the same, ``forecast/billing_kpis.py``)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import psycopg
import pytest

from psa_erp_sync.config import load_config
from psa_erp_sync.forecast.settings import load_forecast_settings
from psa_erp_sync.revenue import service
from psa_erp_sync.revenue.recognition import month_index
from tests.revenue.conftest import seed_firm

pytestmark = pytest.mark.integration

OCT = month_index(date(2026, 10, 1))


def _invoice(
    conn: psycopg.Connection, internal: str, project: str, day: date, minor: int, kind: str = "invoice"
) -> None:
    conn.execute(
        "INSERT INTO billing.erp_invoice (record_type, internal_id, external_id, tran_date, project_ref,"
        " legal_entity, currency, total_minor, last_modified, version_hash, body, read_run_id)"
        " VALUES (%s, %s, %s, %s, %s, 'LE-US1', 'USD', %s, now(), 'v', '{}'::jsonb, 'r')",
        (kind, internal, f"x-{internal}", day, project, minor),
    )
    conn.execute(
        "INSERT INTO billing.erp_invoice_line (record_type, internal_id, line_no, amount_minor, currency)"
        " VALUES (%s, %s, 1, %s, 'USD')",
        (kind, internal, minor),
    )


def _october(dsn: str) -> dict[str, tuple[int, int, int]]:
    with psycopg.connect(dsn) as conn:
        service.compute_and_store_period(
            conn, period=OCT, run_id="rev", settings=load_forecast_settings(), config=load_config()
        )
        conn.commit()
        return {
            str(ref): (int(billed), int(asset), int(liability))
            for ref, billed, asset, liability in conn.execute(
                "SELECT project_ref, cum_billed_minor, contract_asset_minor, contract_liability_minor"
                " FROM revenue.recognition_latest WHERE period_month = '2026-10-01'"
            )
        }


def test_billed_comes_from_the_erp_read_back(clean_ods: str) -> None:
    seed_firm(clean_ods)
    # Before any read-back: billing unknown, TM1's 120,000 delivered is all contract asset.
    assert _october(clean_ods)["TM1"] == (0, 120_000, 0)

    with psycopg.connect(clean_ods) as conn:
        _invoice(conn, "1", "TM1", date(2026, 9, 30), 100_000)
        _invoice(conn, "2", "TM1", date(2026, 10, 30), 60_000)
        _invoice(conn, "3", "TM1", date(2026, 10, 31), 10_000, kind="creditmemo")  # net billed 150,000
        _invoice(conn, "4", "RET1", date(2026, 11, 2), 500_000)  # after October: not billed yet in October
        conn.execute(
            "INSERT INTO billing.erp_readback_watermark (record_type, high_watermark, last_run_id, last_read,"
            " last_changed) VALUES ('invoice', %s, 'r', 4, 4)",
            (datetime(2026, 11, 2, tzinfo=UTC),),
        )
    october = _october(clean_ods)
    # TM1: earned 120,000, billed 150,000 net -> a contract liability of 30,000, no asset.
    assert october["TM1"] == (150_000, 0, 30_000)
    # RET1 (100,000 a month, nothing billed through October) stays an asset on its own: not netted.
    billed, asset, liability = october["RET1"]
    assert (billed, liability) == (0, 0) and asset > 0
