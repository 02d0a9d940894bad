"""Invoices exactly once under injected faults: the shape of tests/posting/test_fault_injection.py.

5,200 billable lines (8 customers, 24 projects, three legal entities, USD / GBP / EUR) are seeded
into ``billing.event`` and invoiced through the posting ledger and engine while the ERP simulator,
driven only through its admin API, injects 5xx before and after commit, dropped connections before
and after commit, 429 storms, latency and failing read-backs; the invoicing worker process is
SIGKILLed three times after >= 20 / 40 / 60 % of the invoices are in the ERP, then run again (a
retry). Then 5 % of the invoiced lines change or are unapproved: credit lines and new versions go
through the same faults. Afterwards: 0 double-billed lines, 0 unbilled lines, 0 duplicate documents
by external id, and the ERP's billed total per project equal to the billing events to the cent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest

from tests.billing.invoicing import Firm, assert_billed_exactly_once, clean_billing, correct, insert_events
from tests.conftest import ROOT, RunningSimulator
from tests.fault_rules import exactly_once_faults, with_guaranteed_hits
from tests.fault_rules import fired as fired_by_kind

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LINES = 5_200
BATCH, MAX_LINES = "3", "25"  # ~220 invoices in ~75 batches: enough requests for every fault to fire
# The 429 storm: Retry-After 1 s, from the 40th request, 30 refusals.
FAULTS = exactly_once_faults(failure=0.08, drop=0.06, storm=(1, 40, 30), read_failure=0.05)


def _worker(dsn: str, erp_url: str, run_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.billing.invoice_worker", dsn, erp_url, run_id, BATCH, MAX_LINES],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _progress(dsn: str) -> tuple[int, int]:
    """(invoices in the ERP per the ledger, invoices planned)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE state IN ('confirmed', 'resolved')), count(*)"
            " FROM ledger.posting WHERE record_type = 'invoice'"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _finish(dsn: str, erp_url: str, run_id: str) -> dict[str, Any]:
    final = _worker(dsn, erp_url, run_id)
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0, out[-2000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def test_invoices_exactly_once_under_faults_and_sigkill(clean_ods: str, erp_sim: RunningSimulator) -> None:
    started = time.monotonic()
    clean_billing(clean_ods)
    firm = Firm(customers=8, projects=24)
    firm.seed_erp(erp_sim)
    insert_events(clean_ods, firm.events(LINES))
    erp_sim.admin("PUT", "/faults", json=with_guaranteed_hits(FAULTS))

    kills = 0
    for threshold in (0.2, 0.4, 0.6):
        worker = _worker(clean_ods, erp_sim.base_url, "billing-fault")
        deadline = time.monotonic() + 120
        while True:
            done, planned = _progress(clean_ods)
            if planned and done >= threshold * planned:
                break
            assert worker.poll() is None, "the worker finished before it could be killed"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        kills += 1
    first = _finish(clean_ods, erp_sim.base_url, "billing-fault")
    assert kills == 3 and first["documents"] == {"posted": _progress(clean_ods)[1]}, first

    # 5 % of the invoiced lines change after invoicing (half corrected, half unapproved).
    with psycopg.connect(clean_ods) as conn:
        refs = [
            r
            for (r,) in conn.execute(
                "SELECT event_ref FROM billing.event ORDER BY md5(event_ref) LIMIT %s", (LINES // 20,)
            )
        ]
    for n, ref in enumerate(refs):
        correct(clean_ods, ref, 1000 + n if n % 2 else None)
    second = _finish(clean_ods, erp_sim.base_url, "billing-fault-credits")
    fired = fired_by_kind(erp_sim.admin("GET", "/faults")["rules"])
    erp_sim.admin("DELETE", "/faults")
    for rule in ("5xx-before", "5xx-after", "drop-before", "drop-after", "429-storm", "latency"):
        assert fired[rule] > 0, f"fault {rule} never fired: {fired}"

    figures = assert_billed_exactly_once(clean_ods)
    assert figures["lines"] >= LINES and figures["credit_memos"] > 0, figures
    with psycopg.connect(clean_ods) as conn:
        resolved = conn.execute("SELECT count(*) FROM ledger.posting WHERE state = 'resolved'").fetchone()
    assert resolved is not None and resolved[0] > 0  # ambiguous batches were decided by read-back
    print(
        f"\ninvoice fault suite: {figures}, kills={kills}, faults fired={fired}, resolved by read-back={resolved[0]},"
        f" credits outcome={second['outcome']['creditmemo']}, {time.monotonic() - started:.0f} s"
    )
