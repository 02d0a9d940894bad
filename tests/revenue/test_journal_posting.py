"""Planned revenue journals posted to the ERP simulator as journal entries through the posting
ledger and engine (real PostgreSQL, the ERP over loopback): every planned journal once, its lines
to the cent, parked ones left for finance, a rerun sends nothing."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import psycopg
import pytest

from psa_erp_sync.config import load_config
from psa_erp_sync.forecast.settings import load_forecast_settings
from psa_erp_sync.revenue import service
from psa_erp_sync.revenue.recognition import month_index
from tests.conftest import RunningSimulator
from tests.revenue.conftest import seed_firm

pytestmark = pytest.mark.integration


def erp_periods(erp: RunningSimulator) -> None:
    erp.admin(
        "POST",
        "/seed",
        json={
            "subsidiaries": [
                {
                    "external_id": "LE-US1",
                    "name": "US1",
                    "country": "US",
                    "currency": "USD",
                    "is_inactive": False,
                }
            ],
            "currencies": [{"symbol": "USD", "name": "US Dollar"}],
            "accounting_periods": [
                {
                    "external_id": f"US1-2026-{m:02d}",
                    "subsidiary": "LE-US1",
                    "period_name": f"2026-{m:02d}",
                    "start_date": date(2026, m, 1).isoformat(),
                    "end_date": (date(2026, m + 1, 1) - timedelta(days=1)).isoformat(),
                }
                for m in (9, 10, 11)
            ],
        },
    )


def _post(dsn: str, erp: RunningSimulator, run_id: str) -> dict[str, object]:
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.posting.engine import EngineSettings
    from psa_erp_sync.revenue.posting import post_planned_journals

    with NetSuiteClient(base_url=erp.base_url, account_id="A", token="t", timeout=10) as client:
        return post_planned_journals(
            dsn=dsn,
            client=client,
            config=load_config(),
            run_id=run_id,
            settings=EngineSettings(batch_size=3, max_concurrency=2, progress_every_s=3600),
        )


def test_planned_journals_reach_the_erp_once(clean_ods: str, erp_sim: RunningSimulator) -> None:
    seed_firm(clean_ods)
    erp_periods(erp_sim)
    with psycopg.connect(clean_ods) as conn:
        for month in (9, 10):
            service.compute_and_store_period(
                conn,
                period=month_index(date(2026, month, 1)),
                run_id="rev",
                settings=load_forecast_settings(),
                config=load_config(),
            )
        conn.commit()
        planned = dict(
            conn.execute(
                "SELECT j.external_id, sum(l.debit_minor) FROM revenue.journal j"
                " JOIN revenue.journal_line l USING (idempotency_key) WHERE j.state = 'planned' GROUP BY 1"
            ).fetchall()
        )
    assert len(planned) == 7
    outcome = _post(clean_ods, erp_sim, "post-1")
    assert (outcome["planned"], outcome["posted"], outcome["rejected"], outcome["still_pending"]) == (
        7,
        7,
        0,
        0,
    )
    with psycopg.connect(clean_ods) as conn:
        bodies = {
            x: b
            for x, b in conn.execute(
                "SELECT external_id, body FROM sim_erp.record WHERE type = 'journalentry'"
            )
        }
    assert set(bodies) == set(planned)
    for ext, body in bodies.items():
        debits = sum(int(Decimal(line["debit"]) * 100) for line in body["line"]["items"] if "debit" in line)
        assert debits == planned[ext], ext  # each journal's lines to the cent
        assert body["postingPeriod"]["externalId"].startswith("US1-2026-")
    jobs = erp_sim.admin("GET", "/stats")["batch_jobs"]
    again = _post(clean_ods, erp_sim, "post-2")
    assert (again["planned"], again["posted"], again["erp_requests"]) == (0, 0, 0)
    assert erp_sim.admin("GET", "/stats")["batch_jobs"] == jobs
