"""The operators' exception summary endpoint, over real HTTP against a real ODS."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from psa_erp_sync.api.exceptions_app import create_app
from psa_erp_sync.ods import exceptions
from tests.conftest import RunningSimulator


def test_summary_groups_open_items_by_cause(clean_ods: str) -> None:
    with psycopg.connect(clean_ods) as conn:
        items = [
            exceptions.Item(
                "quarantine", "time_expense", "psa", "time_entry", str(i), "RATE_MISSING", "finance-ops-uk"
            )
            for i in range(3)
        ] + [
            exceptions.Item(
                "dead_letter",
                "time_expense",
                "psa",
                "time_entry",
                "9",
                "PERIOD_CLOSED",
                "finance-ops-us-east",
            )
        ]
        exceptions.quarantine_many(conn, items, run_id="r1")
        exceptions.quarantine_many(conn, items[:1], run_id="r2")  # a repeat sighting adds no row
    server = RunningSimulator("exceptions-api", create_app(dependencies=[], dsn=clean_ods)).start()
    try:
        body = httpx.get(f"{server.base_url}/exceptions/summary", timeout=10).json()
    finally:
        server.stop()
    assert body["total"] == 4
    assert body["groups"][0] == {
        "kind": "quarantine",
        "reason_code": "RATE_MISSING",
        "owner": "finance-ops-uk",
        "count": 3,
        "fix": "Set the bill rate on the project's rate card in the PSA.",  # config/ownership.yaml
    }
    assert body["groups"][1]["fix"].startswith("Finance decides")  # PERIOD_CLOSED


def test_plugin_guards_its_routes_with_airflow_auth() -> None:
    pytest.importorskip("airflow.api_fastapi.core_api.security")
    app = create_app()
    assert app.router.dependencies, "plugin apps are mounted without Airflow auth: the app must guard itself"
