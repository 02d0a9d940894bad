"""SAP through the same exactly-once machinery, under injected faults (the NetSuite suite's shape).

A few thousand approved time entries go PSA -> staging -> canonical -> SAP timesheets through the
posting engine with the SAP adapter, while the SAP simulator, driven only through its admin API,
answers 5xx before and after commit on ``$batch``, drops connections before and after commit,
throttles, fails the second changeset of every ``$batch`` (rolled back on its own), and has every
CSRF token expired every second; the posting worker process is SIGKILLed three times after >= 20 %
progress and then started again (a retry, and another while postings are still pending). Afterwards: no duplicate in SAP by tag or by content (one
live record per PSA entry), nothing missing, hours per entry and amounts to the cent equal to the
approved PSA set less what is parked or rejected, and every parked or rejected record in the
exception queue with a reason.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT, RunningSimulator
from tests.fault_rules import exactly_once_faults, with_guaranteed_hits
from tests.fault_rules import fired as fired_by_kind
from tests.posting.sap_worker import COMPANY_CODES
from tests.posting.staged_firm import assert_settled, confirmed, stage_firm
from tests.routed_config import route_to

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TODAY = date(2026, 11, 9)
AS_OF = datetime(2026, 11, 9, 12, tzinfo=UTC)
BATCH = r"/\$batch$"
FAULTS = exactly_once_faults(
    batch=BATCH,
    api="/sap/opu/",
    read="TimeSheetEntryCollection",
    latency_ms=60,
    failure=0.05,
    drop=0.04,
    storm=(0, 30, 6),  # Retry-After 0 s, from the 30th request, 6 refusals
    read_failure=0.03,
    read_seed=7,
    read_method="GET",
)
# Business refusals a dead letter may carry; never a fault's answer, a rolled-back changeset or a closed period.
NOT_A_RECORDS_FAULT = {"PERIOD_CLOSED", "UNKNOWN", "SAP_HTTP_500", "/IWBEP/CM_MGW_RT/004", "SAP_HTTP_502"}


def _prepare(dsn: str, psa: RunningSimulator, sap: RunningSimulator, consultants: int) -> int:
    """Seed a firm in the PSA, extract and validate it; seed SAP's company codes, periods (open
    from October 2026) and a work agreement for every consultant but a few (their entries are
    refused by SAP: business dead letters)."""
    from simulators.firm.generator import FirmSpec

    spec = FirmSpec(seed=11, consultants=consultants, customers=20, projects=40, opportunities=2, today=TODAY)
    approved = stage_firm(dsn, psa, spec, erp_url=None, prefix="sapfault", as_of=AS_OF)
    with psycopg.connect(dsn) as conn:
        users = sorted(
            int(u) for (u,) in conn.execute("SELECT DISTINCT user_ref FROM canonical.time_entry").fetchall()
        )
    currency = {"LE-US1": "USD", "LE-US2": "USD", "LE-UK1": "GBP"}
    sap.admin(
        "POST",
        "/seed",
        json={
            "company_codes": [
                {"company_code": c, "currency": currency[le]} for le, c in COMPANY_CODES.items()
            ],
            "work_agreements": [
                {
                    "external_id": f"psa-user-{u}",
                    "company_code": c,
                    "person_work_agreement": f"{50000000 + u:08d}",
                }
                for u in users
                if u % 23  # a few consultants have no work agreement in SAP
                for c in COMPANY_CODES.values()
            ],
            "posting_periods": [
                {"company_code": c, "fiscal_year": y, "period": m, "open": (y, m) >= (2026, 10)}
                for c in COMPANY_CODES.values()
                for y in (2025, 2026, 2027)
                for m in range(1, 13)
            ],
        },
    )
    return approved


def _worker(dsn: str, sap_url: str) -> subprocess.Popen[bytes]:
    args = {"dsn": dsn, "sap_url": sap_url, "concurrency": 4, "batch_size": 50, "timeout": 10.0}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.posting.sap_worker", json.dumps(args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


class _CsrfExpirer(threading.Thread):
    """Expires every CSRF token of SAP once a second while the workers run (tokens die mid-run)."""

    def __init__(self, sap: RunningSimulator) -> None:
        super().__init__(daemon=True)
        self.sap = sap
        self.stop = threading.Event()
        self.expired = 0

    def run(self) -> None:
        while not self.stop.wait(1.0):
            self.expired += int(self.sap.admin("POST", "/csrf/expire")["expired"])


def test_sap_exactly_once_effect_under_faults_and_sigkill(
    clean_ods: str,
    psa_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    route_to(monkeypatch, tmp_path / "config", "sap")  # every entity posts to SAP (workers inherit it)
    started = time.monotonic()
    approved = _prepare(clean_ods, psa_sim, sap_sim, consultants=80)
    assert approved >= 2_000, approved
    sap_sim.admin("PUT", "/faults", json=with_guaranteed_hits(FAULTS))
    sap_sim.admin("PUT", "/config", json={"fail_batch_changeset": 2, "page_size": 200})
    expirer = _CsrfExpirer(sap_sim)
    expirer.start()
    try:
        kills = 0
        for threshold in (0.2, 0.4, 0.6):
            worker = _worker(clean_ods, sap_sim.base_url)
            deadline = time.monotonic() + 120
            while confirmed(clean_ods) < threshold * approved:
                if worker.poll() is not None:
                    pytest.fail(
                        f"the worker ended before it could be killed: {worker.stderr.read()[-2000:]!r}"
                    )  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "no progress"
                time.sleep(0.05)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            kills += 1
        for _retry in range(3):  # Airflow's retries: a pass may end with postings still pending
            final = _worker(clean_ods, sap_sim.base_url)
            out, err = final.communicate(timeout=300)
            if final.returncode != 3:
                break
    finally:
        expirer.stop.set()
        expirer.join()
    assert final.returncode == 0, err[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    fired = fired_by_kind(sap_sim.admin("GET", "/faults")["rules"])
    sap_sim.admin("DELETE", "/faults")
    sap_sim.admin("PUT", "/config", json={"fail_batch_changeset": 0})
    counters = sap_sim.admin("GET", "/stats")["counters"]
    assert kills == 3
    for rule in ("5xx-before", "5xx-after", "drop-before", "drop-after", "429-storm", "latency"):
        assert fired[rule] > 0, f"fault {rule} never fired: {fired}"
    assert counters.get("changesets_failed", 0) > 0, counters  # second changesets rolled back
    assert counters.get("csrf_refused", 0) > 0 and expirer.expired > 0, counters  # tokens expired mid-run

    live, totals = _assert_exactly_once(clean_ods, sap_sim)
    assert live >= 0.8 * approved, (live, approved)
    print(
        f"\nSAP fault suite: {approved} approved, {live} live in SAP, kills={kills}, faults fired={fired},"
        f" counters={counters}, totals={totals}, final={result['outcome']}, {time.monotonic() - started:.1f} s"
    )


_TAG = re.compile(r"^\[psa:([0-9a-f]{40})\] psa:(\S+) ")


def _assert_exactly_once(dsn: str, sap: RunningSimulator) -> tuple[int, dict[str, Any]]:
    """0 duplicates (by tag, by content), 0 missing, hours per entry and amounts to the cent."""
    records = sap.admin("GET", "/timesheets")["items"]
    live = [r for r in records if r["TimeSheetStatus"] in ("10", "20", "30", "40")]
    tags = [_TAG.match(r["TimeSheetDataFields"]["TimeSheetNoteText"]) for r in records]
    assert None not in tags, "a record without our tag"
    by_tag = Counter(m.group(1) for m in tags if m)
    assert [k for k, n in by_tag.items() if n > 1] == []  # 0 duplicates by tag (any status)
    held: dict[str, Decimal] = {}
    for r in live:
        match = _TAG.match(r["TimeSheetDataFields"]["TimeSheetNoteText"])
        assert match is not None
        source = match.group(2)
        assert source not in held, f"two live records for PSA entry {source}"  # 0 duplicates by content
        held[source] = Decimal(r["TimeSheetDataFields"]["RecordedHours"])
    with psycopg.connect(dsn) as conn:
        assert_settled(conn)
        letters = dict(
            conn.execute(
                "SELECT reason_code, count(*) FROM exceptions.item WHERE kind = 'dead_letter' GROUP BY 1"
            ).fetchall()
        )
        # What SAP should hold: every approved entry whose latest posting landed.
        want = {
            sid: (Decimal(hours), int(rate), int(amount), cur)
            for sid, hours, rate, amount, cur in conn.execute(
                """
                SELECT c.source_id, c.hours, c.bill_rate_minor, c.amount_minor, c.currency
                FROM canonical.time_entry c
                JOIN LATERAL (SELECT state FROM ledger.posting p WHERE p.source_id = c.source_id
                              ORDER BY seq DESC LIMIT 1) last ON true
                WHERE c.approved AND NOT c.is_deleted AND last.state IN ('confirmed', 'resolved')
                """
            ).fetchall()
        }
        parked_or_rejected = conn.execute(
            "SELECT count(*) FROM canonical.time_entry c WHERE c.approved AND NOT c.is_deleted AND NOT EXISTS ("
            " SELECT 1 FROM ledger.posting p WHERE p.source_id = c.source_id AND p.state IN ('confirmed', 'resolved'))"
        ).fetchone()
    assert not NOT_A_RECORDS_FAULT & set(letters), letters
    assert set(held) == set(want), (
        f"missing in SAP: {sorted(set(want) - set(held))[:5]}, unexpected: {sorted(set(held) - set(want))[:5]}"
    )
    assert {s: h for s, (h, *_) in want.items()} == held  # hours per entry, to the hundredth
    amounts: Counter[str] = Counter()
    for source, (_hours, rate, amount, currency) in want.items():
        in_sap = (held[source] * rate).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
        assert int(in_sap) == amount, (source, in_sap, amount)
        amounts[currency] += amount
    totals = {
        "count": len(held),
        "hours": str(sum(held.values())),
        "amount_minor": dict(amounts),
        "parked_or_rejected": parked_or_rejected[0] if parked_or_rejected else None,
        "dead_letters": letters,
    }
    return len(held), totals
