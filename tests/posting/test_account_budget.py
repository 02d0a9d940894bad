"""One ERP account, one concurrency budget, across processes.

Four OS processes (standing for two Celery workers' tasks) post to the same ERP account at once:
the timebill and expense-report passes (the posting command line), a stream pass over the inbox and
a dead-letter replay. The ERP simulator, limited to 4 requests in flight for the account, records
the highest number of requests that arrived at once (``max_requested``, 429s included). It must
never exceed the limit, nothing may be throttled, and the month must still post exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT
from tests.dags.test_time_expense_dag import AS_OF, _dag, wired  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.slow]

LIMIT = 4
ACCOUNT = "A1"


def _validated_month(dsn: str) -> None:
    """Extract, stage and validate the month through the real DAG, without posting."""
    dag = _dag().partial_subset(["validate_time_entries", "validate_expenses"], include_upstream=True)
    run = dag.test(logical_date=AS_OF)
    assert run.state == "success", run.state
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM ledger.posting").fetchone() == (0,)


def _announce(dsn: str) -> int:
    """Webhook events for a slice of the month, as the ingress would have accepted them."""
    from datetime import UTC, datetime

    from psa_erp_sync.api.ingress import InboxWriter

    with psycopg.connect(dsn) as conn:
        times = [
            r[0]
            for r in conn.execute("SELECT source_id FROM canonical.time_entry ORDER BY source_id LIMIT 40")
        ]
        expenses = [
            r[0]
            for r in conn.execute("SELECT source_id FROM canonical.expense_entry ORDER BY source_id LIMIT 20")
        ]
    writer = InboxWriter(dsn)
    try:
        for kind, ids in (("time_entry", times), ("expense", expenses)):
            for source_id in ids:
                writer.accept(
                    delivery_id=f"budget-{kind}-{source_id}",
                    source_system="psa",
                    event_type=f"{kind}.approved",
                    source_id=source_id,
                    occurred_at=datetime.now(UTC),
                    body=json.dumps({"event": f"{kind}.approved", "data": {"id": int(source_id)}}).encode(),
                )
    finally:
        writer.close()
    return len(times) + len(expenses)


def _erp_records(dsn: str, record_type: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return dict(
            conn.execute(
                "SELECT external_id, count(*) FROM sim_erp.record WHERE type = %s GROUP BY external_id",
                (record_type,),
            ).fetchall()
        )


def _expected(dsn: str, record_type: str, table: str, prefix: str) -> set[str]:
    """Approved, valid records whose latest posting was not refused (dead letter or parked)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f"SELECT c.source_id FROM canonical.{table} c WHERE c.approved AND NOT EXISTS ("
            " SELECT 1 FROM ledger.posting p WHERE p.record_type = %s AND p.source_id = c.source_id"
            " AND p.state IN ('rejected', 'parked')"
            " AND p.seq = (SELECT max(seq) FROM ledger.posting m WHERE m.record_type = p.record_type"
            "              AND m.source_id = p.source_id))",
            (record_type,),
        ).fetchall()
    return {f"{prefix}{r[0]}" for r in rows}


def test_four_processes_posting_to_one_account_stay_within_its_limit(
    wired: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    dsn, psa, erp = wired["dsn"], wired["psa"], wired["erp"]
    _validated_month(dsn)
    announced = _announce(dsn)
    erp.admin("PUT", "/config", json={"concurrency_limit": LIMIT, "service_time_ms": 40, "retry_after_s": 0})
    erp.admin("POST", "/concurrency/reset")

    args = {
        "dsn": dsn,
        "erp_url": erp.base_url,
        "psa_url": psa.base_url,
        "account": ACCOUNT,
        "limit": LIMIT,
        "batch_size": 5,
        "as_of": AS_OF.isoformat(),
    }
    go = tmp_path / "go"
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "include")])}
    jobs = ["timebill", "expensereport", "stream", "replay"]
    procs = []
    for job in jobs:
        command = [sys.executable, "-m", "tests.posting.budget_worker", job, json.dumps(args), str(go)]
        procs.append(
            subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    try:
        deadline = time.monotonic() + 90
        while not all((tmp_path / f"ready-{job}").exists() for job in jobs):  # every worker imported
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), (
                "a worker did not start"
            )
            time.sleep(0.05)
        go.touch()
        started = time.monotonic()
        outputs = [p.communicate(timeout=240) for p in procs]
        print(f"four posting processes: {time.monotonic() - started:.1f} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for job, p, (_, err) in zip(jobs, procs, outputs, strict=True):
        assert p.returncode == 0, f"{job} failed:\n{err[-4000:]}"
    results = {
        json.loads(out.strip().splitlines()[-1])["job"]: json.loads(out.strip().splitlines()[-1])
        for out, _ in outputs
    }
    assert results["stream"]["claimed"] == announced
    assert results["replay"]["released"] > 0  # the replay really posted again, alongside the others

    seen = erp.admin("GET", "/concurrency")["accounts"][ACCOUNT]
    assert seen["requests"] > 100, seen  # enough traffic for the limit to matter
    assert seen["max_requested"] <= LIMIT, seen
    assert seen["throttled"] == 0, seen

    # Exactly once: every expected record is in the ERP once, and nothing else is.
    for record_type, table, prefix in (
        ("timebill", "time_entry", "psa-te-"),
        ("expensereport", "expense_entry", "psa-ex-"),
    ):
        held = _erp_records(dsn, record_type)
        assert set(held) == _expected(dsn, record_type, table, prefix), record_type
        assert set(held.values()) == {1}
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM ledger.posting WHERE state = 'pending'").fetchone() == (0,)
        twice = conn.execute(
            "SELECT count(*) FROM (SELECT record_type, source_id FROM ledger.posting WHERE state = 'confirmed'"
            " AND action = 'post' GROUP BY 1, 2 HAVING count(*) > 1) d"
        ).fetchone()
    assert twice == (0,)
