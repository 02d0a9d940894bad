"""The consumer DAG through real Airflow (``dag.test()``): one short lifetime of
``consume_inbox`` claims an announced approval as ``consumer:<run id>`` and posts it."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest

from tests.dags.test_time_expense_dag import _erp_timebills, wired  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


def test_the_consumer_dag_posts_an_announced_approval_within_its_lifetime(
    wired: dict[str, Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.conftest import DAGS

    dsn, psa = wired["dsn"], wired["psa"]
    with psycopg.connect(dsn) as conn:
        entry = conn.execute(
            "SELECT t.id FROM sim_psa.time_entries t WHERE NOT t.is_closed AND t.billable_rate > 0"
            " AND t.spent_date <= current_date ORDER BY t.id LIMIT 1 OFFSET 5"
        ).fetchone()
    assert entry is not None
    psa.admin("POST", f"/time_entries/{entry[0]}/approve")
    delivery = str(uuid.uuid4())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO inbox.event (delivery_id, source_system, event_type, source_id, occurred_at, payload)"
            " VALUES (%s, 'psa', 'time_entry.approved', %s, now(), %s::jsonb)",
            (delivery, str(entry[0]), json.dumps({"data": {"id": entry[0]}})),
        )
    monkeypatch.setenv("AIRFLOW_VAR_PSA_ERP_SYNC_STREAM_CONSUMER_LIFETIME_S", "8")

    bag = DagBag(dag_folder=str(DAGS / "time_expense_stream_consumer.py"), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("time_expense_stream_consumer")
    assert dag.max_active_runs == 1 and [t.task_id for t in dag.tasks] == ["consume_inbox"]
    for task in dag.tasks:
        task.retries = 0
    run = dag.test()
    assert run.state == "success"

    with psycopg.connect(dsn) as conn:
        status = conn.execute(
            "SELECT status, claimed_by, outcome FROM inbox.event WHERE delivery_id = %s", (delivery,)
        ).fetchone()
        quarantined = conn.execute(
            "SELECT reason_code FROM exceptions.item WHERE source_id = %s AND status = 'open'",
            (str(entry[0]),),
        ).fetchall()
    assert status == ("processed", f"consumer:{run.run_id}", "synced:timebill")
    assert quarantined or f"psa-te-{entry[0]}" in _erp_timebills(dsn), quarantined
