"""Two ERP accounts post in parallel; each account's limit still holds across processes.

Four OS processes (standing for tasks on different workers): the timebill and the expense-report
pass of ERP account A1, and the same two of account A2. Ledger rows are routed to their account
(``target_erp``/``erp_account``, as the planner stamps them). The ERP simulator admits at most
LIMIT requests in flight per account and records the most that arrived at once. Each account's
two processes together want twice its limit; the shared budget (keyed by ERP and account) must
keep each account within LIMIT, while the posting lock (keyed by ERP account and record type) lets
the two accounts' timebill passes run at the same time instead of one after the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest

from psa_erp_sync.posting import ledger
from tests.conftest import ROOT, RunningSimulator
from tests.posting.released_together import overlap, release

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIMIT = 3
ACCOUNTS = ("A1", "A2")
PER_PASS = 120  # postings per (account, record type)
JOBS = [(a, rt) for a in ACCOUNTS for rt in ("timebill", "expensereport")]


def _rows(dsn: str) -> None:
    """Pending postings per account and record type, with the canonical version each one posts
    (so the pass's planner finds them current and plans nothing new)."""
    postings, n = [], 0
    for account, record_type in JOBS:
        table = "time_entry" if record_type == "timebill" else "expense_entry"
        with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
            for _ in range(PER_PASS):
                n += 1
                cur.execute(
                    f"INSERT INTO canonical.{table} (source_system, source_id, version_hash, spent_date, user_ref,"
                    " project_ref, legal_entity, billable, amount_minor, currency, approved, fingerprint,"
                    " source_updated_at, record"
                    + (", hours, bill_rate_minor" if table == "time_entry" else ", category")
                    + ") VALUES ('psa', %s, 'v1', %s, '1', '1', 'LE-US1', false, 100, 'USD', true, %s, now(), '{}'"
                    + (", 1, 100)" if table == "time_entry" else ", 'travel')"),
                    (str(n), date(2026, 10, 1), str(n)),
                )
                key = ledger.idempotency_key(record_type, "psa", str(n), "v1", "post", 0)
                postings.append(
                    ledger.Posting(
                        key,
                        record_type,
                        "psa",
                        str(n),
                        "v1",
                        f"psa-{n}",
                        "post",
                        "pending",
                        {"externalId": f"psa-{n}", "memo": f"key:{key[:16]}", "tranDate": "2026-10-01"},
                        "LE-US1",
                        target_erp="netsuite",
                        erp_account=account,
                        route_version=1,
                    )
                )
    with psycopg.connect(dsn) as conn:
        ledger.insert_planned(conn, postings)


def _start(dsn: str, erp: RunningSimulator, go: Path) -> list[subprocess.Popen[str]]:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "include")])}
    procs = []
    for account, record_type in JOBS:
        args = {
            "dsn": dsn,
            "erp_url": erp.base_url,
            "account": account,
            "record_type": record_type,
            "limit": LIMIT,
            "batch_size": 2,
        }
        command = [sys.executable, "-m", "tests.posting.account_worker", json.dumps(args), str(go)]
        procs.append(
            subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    return procs


def _run(dsn: str, erp: RunningSimulator, tmp_path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    go = tmp_path / "go"
    procs = _start(dsn, erp, go)
    ready = [tmp_path / f"ready-{a}-{rt}" for a, rt in JOBS]  # every worker imported
    lines = release(procs, ready, go, start_timeout=90, timeout=180)
    return {(r["account"], r["record_type"]): r for r in lines}


def test_two_accounts_post_at_once_and_each_stays_within_its_limit(
    clean_ods: str, erp_sim: RunningSimulator, tmp_path: Path
) -> None:
    _rows(clean_ods)
    erp_sim.admin(
        "PUT", "/config", json={"concurrency_limit": LIMIT, "service_time_ms": 40, "retry_after_s": 0}
    )
    erp_sim.admin("POST", "/concurrency/reset")
    results = _run(clean_ods, erp_sim, tmp_path)

    seen = erp_sim.admin("GET", "/concurrency")["accounts"]
    for account in ACCOUNTS:
        load = seen[account]
        assert load["requests"] >= PER_PASS, load  # each account really posted (batches of 2, both passes)
        assert load["max_requested"] <= LIMIT, load  # its two processes together stayed within its limit
        assert load["throttled"] == 0, load
    # The accounts ran side by side: the two timebill passes (one lock each now) overlapped.
    timebills = results[("A1", "timebill")], results[("A2", "timebill")]
    assert overlap(*timebills) > 0.5, timebills
    print(
        "per-account passes (s):",
        {f"{a}/{rt}": round(r["ended"] - r["started"], 2) for (a, rt), r in results.items()},
        "max in flight:",
        {a: seen[a]["max_requested"] for a in ACCOUNTS},
    )

    # Each pass sent only its own account's rows, each exactly once.
    with psycopg.connect(clean_ods) as conn:
        wrong = conn.execute(
            "SELECT count(*) FROM ledger.attempt a JOIN ledger.posting p USING (idempotency_key)"
            " WHERE a.dag_run_id <> 'acct-' || p.erp_account || '-' || p.record_type"
        ).fetchone()
        attempts = conn.execute(
            "SELECT count(*), count(DISTINCT idempotency_key) FROM ledger.attempt"
        ).fetchone()
        unfinished = conn.execute(
            "SELECT count(*) FROM ledger.posting WHERE state IN ('pending', 'sent', 'ambiguous')"
        ).fetchone()
    assert wrong == (0,)
    assert attempts == (len(JOBS) * PER_PASS, len(JOBS) * PER_PASS)
    assert unfinished == (0,)
