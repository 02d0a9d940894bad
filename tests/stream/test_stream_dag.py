"""The stream DAG through real Airflow (``dag.test()``): an inbox event for a freshly approved
entry becomes an ERP posting; with no reference staged yet, the run extracts it itself."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest

from tests.dags.test_time_expense_dag import _erp_timebills, wired  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


def test_stream_dag_posts_an_announced_approval(wired: dict[str, Any]) -> None:  # noqa: F811
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.conftest import DAGS

    dsn, psa = wired["dsn"], wired["psa"]
    with psycopg.connect(dsn) as conn:
        candidates = [
            r[0]
            for r in conn.execute(
                "SELECT t.id FROM sim_psa.time_entries t WHERE NOT t.is_closed AND t.billable_rate > 0"
                " AND t.spent_date <= current_date ORDER BY t.id LIMIT 40"
            )
        ]
    assert candidates
    entry = candidates[len(candidates) // 2]
    psa.admin("POST", f"/time_entries/{entry}/approve")
    delivery = str(uuid.uuid4())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO inbox.event (delivery_id, source_system, event_type, source_id, occurred_at, payload)"
            " VALUES (%s, 'psa', 'time_entry.approved', %s, now(), %s::jsonb)",
            (delivery, str(entry), json.dumps({"data": {"id": entry}})),
        )
        # A fresh event is the consumer's (time_expense_stream_consumer): this run, the safety net,
        # leaves it pending; one no consumer claimed for SAFETY_NET_DELAY_S is the run's. (The
        # fresh one is stamped ahead: dag.test() may take longer than the delay to reach the claim.)
        fresh = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO inbox.event (delivery_id, source_system, event_type, source_id, occurred_at, payload)"
            " VALUES (%s, 'psa', 'time_entry.approved', %s, now(), %s::jsonb)",
            (fresh, str(candidates[0]), json.dumps({"data": {"id": candidates[0]}})),
        )
        conn.execute(
            "UPDATE inbox.event SET received_at = now() - interval '1 minute' WHERE delivery_id = %s",
            (delivery,),
        )
        conn.execute(
            "UPDATE inbox.event SET received_at = now() + interval '1 hour' WHERE delivery_id = %s", (fresh,)
        )

    bag = DagBag(dag_folder=str(DAGS / "time_expense_stream.py"), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("time_expense_stream")
    for task in dag.tasks:
        task.retries = 0
    run = dag.test()
    assert run.state == "success"

    with psycopg.connect(dsn) as conn:
        status = conn.execute(
            "SELECT status, claimed_by, outcome FROM inbox.event WHERE delivery_id = %s", (delivery,)
        ).fetchone()
        refreshed = conn.execute(
            "SELECT count(*) FROM staging.extract_run WHERE run_key LIKE %s",
            (f"time_expense_stream/{run.run_id}/%",),
        ).fetchone()
        quarantined = conn.execute(
            "SELECT reason_code FROM exceptions.item WHERE source_id = %s AND status = 'open'", (str(entry),)
        ).fetchall()
        left = conn.execute("SELECT status FROM inbox.event WHERE delivery_id = %s", (fresh,)).fetchone()
    assert status == ("processed", run.run_id, "synced:timebill")
    assert left == ("pending",)
    assert refreshed == (4,)  # no reference was staged: the run read it from the PSA itself
    erp = _erp_timebills(dsn)
    assert quarantined or f"psa-te-{entry}" in erp, quarantined
    # Nothing else was posted: the stream posts what canonical holds, and only this entry is in it.
    with psycopg.connect(dsn) as conn:
        canonical = conn.execute("SELECT count(*) FROM canonical.time_entry").fetchone()
    assert canonical == (1,)
