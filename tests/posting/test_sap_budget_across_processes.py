"""The SAP account's concurrency budget holds across processes; NetSuite and SAP post side by side.

Three OS processes (standing for tasks on different workers), each building its client through its
connection's hook as a deployment does: the SAP timesheet pass (``$batch``) and the SAP expense pass
(journal entries, one request each) of one SAP account, and a NetSuite timebill pass. The SAP
account (``sap:<host:port>``, the name ``SapHook`` derives when the connection's extra names none)
has a limit of 2 in the environment file (``erp.concurrency.accounts``); each SAP process runs 4
engine threads, so together they would send up to 8 requests at once. The SAP simulator counts the
requests in flight (``GET /admin/stats`` ``load``): the budget shared through PostgreSQL advisory
locks (:mod:`psa_erp_sync.posting.budget`, keyed ``sap.<account>``) must keep it at 2, while the
NetSuite pass (its own account's budget) runs at the same time instead of waiting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from psa_erp_sync.clients.erp import NetSuiteClient
from psa_erp_sync.clients.sap import S4HanaClient
from psa_erp_sync.config import load_config
from psa_erp_sync.posting import planner
from psa_erp_sync.posting.adapter import NetSuiteAdapter, SapAdapter, SapMapping
from psa_erp_sync.posting.periods import PeriodBook
from tests.conftest import ROOT, RunningSimulator
from tests.posting.released_together import overlap, release
from tests.two_erps import COMPANY, UK, connect_two_erps, expense_entry, time_entry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIMIT = 2
THREADS = 4
PER_PASS = 40
JOBS = [("sap", "timebill"), ("sap", "expensereport"), ("netsuite", "timebill")]


def _records(dsn: str) -> None:
    """January 2027 (SAP) time and expenses, December 2026 (NetSuite) time, planned into the
    ledger once here, so each worker's own planner finds nothing new and only sends."""
    with psycopg.connect(dsn) as conn:
        for n in range(PER_PASS):
            time_entry(conn, 1000 + n, str(date(2027, 1, 4) + timedelta(days=n % 20)), "v1", "1.25")
            time_entry(conn, 2000 + n, str(date(2026, 12, 1) + timedelta(days=n % 20)), "v1", "2.00")
            expense_entry(conn, 3000 + n, str(date(2027, 1, 4) + timedelta(days=n % 20)), 1000 + n)
        conn.commit()


def _plan(dsn: str, erp: RunningSimulator, sap: RunningSimulator) -> None:
    mapping = SapMapping(company_codes={UK: COMPANY}, activity_type="T001", fiscal_years=(2026, 2027))
    with (
        NetSuiteClient(base_url=erp.base_url, account_id="A1", token="t") as ns,
        S4HanaClient(base_url=sap.base_url, user="PSA_COMM", password="secret") as s4,
    ):
        books = {
            "netsuite": PeriodBook.from_rows(NetSuiteAdapter(ns).read_periods()),
            "sap": PeriodBook.from_rows(SapAdapter(s4, mapping).read_periods()),
        }
    with psycopg.connect(dsn) as conn:
        for record_type in ("timebill", "expensereport"):
            planner.plan(
                conn,
                record_type=record_type,
                config=load_config(),
                periods=books["netsuite"],
                dag_run_id="plan",
                periods_by_erp=books,
            )
        conn.commit()


def _limit_sap_account(config_dir: Path, sap: RunningSimulator) -> str:
    """The SAP account's limit in the environment file of the config copy; returns its name."""
    account = "sap:" + sap.base_url.split("://", 1)[1].rstrip("/")
    path = config_dir / "environments" / f"{os.environ['PSA_ERP_SYNC_ENV']}.yaml"
    env = yaml.safe_load(path.read_text(encoding="utf-8"))
    env["erp"]["concurrency"]["accounts"][account] = LIMIT
    path.write_text(yaml.safe_dump(env, sort_keys=False), encoding="utf-8")
    return account


def _run(dsn: str, tmp_path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "include")])}
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.posting.sap_budget_worker",
                json.dumps({"dsn": dsn, "erp": erp, "record_type": rt, "threads": THREADS}),
                str(go),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for erp, rt in JOBS
    ]
    ready = [tmp_path / f"ready-{e}-{rt}" for e, rt in JOBS]
    lines = release(procs, ready, go, start_timeout=120, timeout=300)
    return {(r["erp"], r["record_type"]): r for r in lines}


def test_two_processes_stay_within_the_sap_account_limit_while_netsuite_posts_alongside(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config_dir = connect_two_erps(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim)
    account = _limit_sap_account(config_dir, sap_sim)
    _records(clean_ods)
    _plan(clean_ods, erp_sim, sap_sim)
    sap_sim.admin("PUT", "/config", json={"service_time_ms": 60})
    erp_sim.admin("PUT", "/config", json={"service_time_ms": 40})
    sap_sim.admin("DELETE", "/load")
    results = _run(clean_ods, tmp_path)

    load = sap_sim.admin("GET", "/stats")["load"]
    sap_passes = results[("sap", "timebill")], results[("sap", "expensereport")]
    assert all((r["account"], r["limit"]) == (account, LIMIT) for r in sap_passes), sap_passes
    assert [r["outcome"]["posted"] for r in sap_passes] == [PER_PASS, PER_PASS]
    assert results[("netsuite", "timebill")]["outcome"]["posted"] == PER_PASS
    assert load["requests"] >= PER_PASS + PER_PASS // 2, load  # 40 journal entries, 20 $batch, reads
    assert load["max_in_flight"] <= LIMIT, load  # both SAP processes together within the account's limit
    # NetSuite did not wait for SAP's slots: its pass ran while the SAP passes ran.
    netsuite = results[("netsuite", "timebill")]
    assert max(overlap(netsuite, r) for r in sap_passes) > 0.5, results
    print(
        "passes (s):",
        {f"{e}/{rt}": round(r["ended"] - r["started"], 2) for (e, rt), r in results.items()},
        "SAP max in flight:",
        load["max_in_flight"],
        "requests:",
        load["requests"],
    )
    with psycopg.connect(clean_ods) as conn:
        unfinished = conn.execute(
            "SELECT count(*) FROM ledger.posting WHERE state IN ('pending', 'sent', 'ambiguous')"
        ).fetchone()
    assert unfinished == (0,)
    assert sap_sim.admin("GET", "/stats")["journal_entries"] == PER_PASS
