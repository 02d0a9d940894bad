"""The retention DAG through real Airflow (``dag.test()``) against the ODS on real PostgreSQL:
as of the run's logical date, old staged people payloads and webhook bodies go, recent ones stay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.conftest import connect_airflow
from tests.dags.test_master_data_dag import load_dag

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

AS_OF = datetime(2026, 12, 6, 3, 15, tzinfo=UTC)


def test_ods_retention_dag_enforces_the_configured_periods(
    airflow_db: str, clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect_airflow(monkeypatch, clean_ods)
    with psycopg.connect(clean_ods) as conn:
        for digest, fetched in (("old", AS_OF - timedelta(days=31)), ("new", AS_OF - timedelta(days=1))):
            conn.execute(
                "INSERT INTO staging.raw_record (source_system, endpoint, source_id, payload_hash, payload,"
                " fetched_at, first_run_key, last_run_key) VALUES ('psa', '/v2/users', '1', %s, %s, %s, 'k', 'k')",
                (digest, json.dumps({"id": 1, "email": f"{digest}@example.com", "is_active": True}), fetched),
            )
        conn.execute(
            "INSERT INTO inbox.event (delivery_id, source_system, event_type, source_id, payload, received_at)"
            " VALUES ('d-old-123', 'psa', 'time_entry.approved', '7', %s, %s)",
            (
                json.dumps({"delivery_id": "d-old-123", "data": {"id": 7, "notes": "private"}}),
                AS_OF - timedelta(days=40),
            ),
        )
    dag: Any = load_dag("ods_retention.py", "ods_retention")
    run = dag.test(logical_date=AS_OF)
    assert run.state == "success"
    with psycopg.connect(clean_ods) as conn:
        staged = [r[0] for r in conn.execute("SELECT payload_hash FROM staging.raw_record")]
        payload = conn.execute("SELECT payload FROM inbox.event").fetchone()
    assert staged == ["new"]
    assert payload == ({"delivery_id": "d-old-123", "data": {"id": 7}},)
