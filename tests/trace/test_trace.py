"""The per-record trace (``python -m psa_erp_sync.trace`` and the plugin endpoint) for a posted, a
quarantined, a replayed and a reversed record, after real DAG runs (``dag.test()``) against the
simulators: every step shows up with the OpenLineage run id recorded by the task that did it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.dags.test_dead_letter_replay import _replay_dag, reactivate_erp_master_data
from tests.dags.test_time_expense_dag import AS_OF, _dag, wired  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


def _one(dsn: str, sql: str, *args: Any) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql, args).fetchone()
    assert row is not None, sql
    return str(row[0])


def _trace(dsn: str, source_id: str) -> dict[str, Any]:
    from psa_erp_sync.trace import trace

    with psycopg.connect(dsn) as conn:
        found = trace(conn, "psa", source_id)
    (record,) = [t for t in found if t["kind"] == "time_entry"]
    return record


def _ol_ids(items: list[dict[str, Any]]) -> set[str]:
    return {r["ol_run_id"] for r in items if r["ol_run_id"]}


def test_trace_posted_quarantined_replayed_reversed(wired: dict[str, Any]) -> None:  # noqa: F811
    dsn = wired["dsn"]
    first = _dag().test(logical_date=AS_OF)
    assert first.state == "success"

    posted = _one(
        dsn,
        "SELECT source_id FROM ledger.posting WHERE record_type='timebill' AND state='confirmed' ORDER BY seq LIMIT 1",
    )
    quarantined = _one(
        dsn,
        "SELECT source_id FROM exceptions.item WHERE kind='quarantine' AND record_type='time_entry'"
        " AND status='open' ORDER BY id LIMIT 1",
    )

    # -- posted: staging -> valid -> ledger (confirmed, with its attempt) -> ERP internal id and period
    t = _trace(dsn, posted)
    assert t["staging"] and t["staging"][0]["first_staged_by"]["run_id"] == first.run_id
    extract_runs = _ol_ids(t["staging"][0]["lineage"])
    assert len(extract_runs) == 1
    assert t["validation"]["verdict"] == "valid, approved"
    validate_runs = _ol_ids(t["validation"]["lineage"])
    assert len(validate_runs) == 1 and validate_runs != extract_runs
    (posting,) = t["ledger"]
    assert posting["state"] == "confirmed" and posting["action"] == "post"
    assert posting["attempts"] and posting["attempts"][-1]["outcome"] == "confirmed"
    post_runs = _ol_ids(posting["attempts"][-1]["lineage"])
    assert len(post_runs) == 1 and not post_runs & (extract_runs | validate_runs)
    assert t["erp"]["in_erp"] and t["erp"]["internal_id"] and t["erp"]["period"]
    with psycopg.connect(dsn) as conn:
        body = conn.execute(
            "SELECT id FROM sim_erp.record WHERE type='timebill' AND external_id=%s", (f"psa-te-{posted}",)
        ).fetchone()
    assert body is not None and str(body[0]) == str(t["erp"]["internal_id"])
    # the same record found by its ERP external id
    assert _trace(dsn, f"psa-te-{posted}")["ledger"][0]["idempotency_key"] == posting["idempotency_key"]

    # -- quarantined: a staged version, a verdict with reason and owner, never posted
    q = _trace(dsn, quarantined)
    assert q["validation"]["verdict"] in {"quarantined", "valid, approved (a later version is quarantined)"}
    (item,) = [e for e in q["validation"]["exceptions"] if e["kind"] == "quarantine"]
    assert item["reason_code"] and item["owner"] and _ol_ids(item["lineage"]) == validate_runs
    assert not q["erp"]["in_erp"]

    # -- replayed: a dead letter released by the replay DAG and posted by it, after the master-data fix
    dead = _one(
        dsn,
        "SELECT source_id FROM exceptions.item WHERE kind='dead_letter' AND record_type='time_entry' AND status='open'"
        " ORDER BY id LIMIT 1",
    )
    reactivate_erp_master_data(wired)
    replay = _replay_dag().test(run_conf={"dry_run": False, "reason_code": "INACTIVE_RECORD"})
    assert replay.state == "success"
    r = _trace(dsn, dead)
    assert [p["state"] for p in r["ledger"]] == ["superseded", "confirmed"]
    assert r["ledger"][0]["attempts"][-1]["outcome"] == "rejected"
    last_attempt = r["ledger"][-1]["attempts"][-1]
    assert last_attempt["dag_run_id"] == replay.run_id
    assert {x["ol_job_name"] for x in last_attempt["lineage"]} == {"dead_letter_replay.post_replayed"}
    assert any(
        e["kind"] == "dead_letter" and e["status"] == "replayed" for e in r["validation"]["exceptions"]
    )
    assert r["erp"]["in_erp"]

    # -- reversed: the PSA unapproves the posted entry; the next sweep reverses it in the ERP
    wired["psa"].admin("POST", f"/time_entries/{posted}/unapprove")
    second = _dag().test(logical_date=AS_OF + timedelta(hours=1), run_conf={"mode": "sweep"})
    assert second.state == "success"
    v = _trace(dsn, posted)
    assert [p["action"] for p in v["ledger"]] == ["post", "reverse"]
    assert v["ledger"][-1]["state"] == "confirmed"
    assert v["validation"]["verdict"] == "valid, not approved"
    assert len(v["staging"]) == 2  # two versions of the payload
    assert not v["erp"]["in_erp"] and v["erp"]["last_action"] == "reverse"
    assert any(a["action"] == "erp_reverse" for a in v["audit"])

    # The command line and the plugin endpoint give the same answer.
    env = {**os.environ, "PSA_ERP_SYNC_DSN": dsn}
    out = subprocess.run(
        [sys.executable, "-m", "psa_erp_sync.trace", "psa", f"psa-te-{posted}", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    cli = json.loads(out.stdout)
    assert [p["action"] for p in cli[0]["ledger"]] == ["post", "reverse"]
    text = subprocess.run(
        [sys.executable, "-m", "psa_erp_sync.trace", "psa", posted],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    ).stdout
    assert "reverse" in text and "lineage:" in text
    missing = subprocess.run(
        [sys.executable, "-m", "psa_erp_sync.trace", "psa", "999999999"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert missing.returncode == 1 and "no psa record" in missing.stderr

    from psa_erp_sync.api.exceptions_app import create_app

    client = TestClient(create_app(dependencies=[], dsn=dsn))
    answer = client.get(f"/trace/psa/{posted}")
    assert answer.status_code == 200
    assert [p["action"] for p in answer.json()["records"][0]["ledger"]] == ["post", "reverse"]
    assert client.get("/trace/psa/999999999").status_code == 404
