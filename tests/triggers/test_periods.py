"""PeriodOpenTrigger: serializes without secrets, and waits on the real ERP simulator until finance
opens the period (the sensor that defers to it: tests/sensors/test_month_end.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from psa_erp_sync.triggers.periods import PeriodOpenTrigger
from tests.conftest import RunningSimulator


def test_trigger_serialization_is_deterministic_and_holds_no_secret() -> None:
    a = PeriodOpenTrigger(erp_conn_id="erp_default", legal_entity="LE-UK1", day="2026-12-01", poll_seconds=5)
    b = PeriodOpenTrigger(erp_conn_id="erp_default", legal_entity="LE-UK1", day="2026-12-01", poll_seconds=5)
    assert a.serialize() == b.serialize()
    path, kwargs = a.serialize()
    assert path == "psa_erp_sync.triggers.periods.PeriodOpenTrigger"
    assert PeriodOpenTrigger(**kwargs).serialize() == a.serialize()
    assert "token" not in json.dumps(kwargs) and "password" not in json.dumps(kwargs)


@pytest.mark.integration
def test_trigger_fires_when_finance_opens_the_period(
    erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    erp_sim.admin(
        "POST",
        "/seed",
        json={
            "subsidiaries": [
                {
                    "external_id": "LE-UK1",
                    "name": "UK",
                    "country": "GB",
                    "currency": "GBP",
                    "is_inactive": False,
                }
            ],
            "accounting_periods": [
                {
                    "external_id": "LE-UK1-2026-12",
                    "subsidiary": "LE-UK1",
                    "period_name": "Dec 2026",
                    "start_date": "2026-12-01",
                    "end_date": "2026-12-31",
                    "closed": True,
                    "all_locked": False,
                    "ar_locked": False,
                    "ap_locked": False,
                },
            ],
        },
    )
    conn = {"conn_type": "http", "host": erp_sim.base_url, "password": "t", "extra": {"account_id": "A"}}
    monkeypatch.setenv("AIRFLOW_CONN_ERP_TEST", json.dumps(conn))
    trigger = PeriodOpenTrigger(
        erp_conn_id="erp_test", legal_entity="LE-UK1", day="2026-12-15", poll_seconds=0.1
    )

    async def scenario() -> Any:
        runner = trigger.run()
        waiting = asyncio.ensure_future(runner.__anext__())
        await asyncio.sleep(0.5)
        assert not waiting.done(), "fired while the period was closed"
        await asyncio.to_thread(erp_sim.admin, "POST", "/periods/LE-UK1-2026-12", json={"closed": False})
        return await asyncio.wait_for(waiting, timeout=10)

    event = asyncio.run(scenario())
    assert event.payload == {"status": "open", "period": "LE-UK1-2026-12", "legal_entity": "LE-UK1"}
