"""Exactly-once effect under injected faults, in the shape of Kafka's transactions system test.

20,000+ approved time entries go PSA -> staging -> canonical -> ERP while the ERP simulator, driven
only through its admin API, injects 5xx before commit, 5xx after commit, 429 storms, latency
spikes and dropped connections (before and after commit), and the posting worker process is
SIGKILLed three times after >= 20 % progress and then started again (a retry). Afterwards: no
duplicate in the ERP by external id or by content, nothing missing, ERP == the approved PSA set
less what is parked or rejected, control totals equal to the cent, and every parked or rejected
record is in the exception queue with a reason.

Smaller firms then meet one answer class each (docs/posting.md, "How ERP answers are classified"):
401 on the job poll after a 202 (the task fails and its retry reads back), 429 on the job poll
until the client gives up (read back, never re-POSTed), and a period that closes in the ERP while
the pass is sending (the periods are read again and the entity's policy applied). And the
backend of the worker's posting-lock connection is terminated mid-pass: the pass stops, and the
next pass completes the month.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import ROOT, RunningSimulator
from tests.fault_rules import exactly_once_faults, with_guaranteed_hits
from tests.fault_rules import fired as fired_by_kind
from tests.posting.staged_firm import assert_settled, confirmed, stage_firm

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TODAY = date(2026, 11, 9)
AS_OF = datetime(2026, 11, 9, 12, tzinfo=UTC)
# The 429 storm: Retry-After 1 s, from the 60th request, 40 refusals; a 1.5 s spike on 1 % of requests.
FAULTS = exactly_once_faults(
    failure=0.04, drop=0.03, storm=(1, 60, 40), read_failure=0.05, spike=(1500, 0.01)
)


def _prepare(dsn: str, psa: RunningSimulator, erp: RunningSimulator, consultants: int = 500) -> int:
    """Seed a firm (~40 entries per consultant) and bring it through extract and validation."""
    from simulators.firm.generator import FirmSpec

    spec = FirmSpec(
        seed=11, consultants=consultants, customers=60, projects=150, opportunities=5, today=TODAY
    )
    return stage_firm(dsn, psa, spec, erp_url=erp.base_url, prefix="fault", as_of=AS_OF)


def _worker(dsn: str, erp_url: str, *extra: str, stderr: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "psa_erp_sync.posting",
            "--dsn",
            dsn,
            "--erp-url",
            erp_url,
            "--record-type",
            "timebill",
            "--concurrency",
            "6",
            "--run-id",
            "fault-run",
            "--timeout",
            "10",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_exactly_once_effect_under_faults_and_sigkill(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator
) -> None:
    approved = _prepare(clean_ods, psa_sim, erp_sim)
    assert approved >= 20_000, approved
    erp_sim.admin("PUT", "/faults", json=with_guaranteed_hits(FAULTS))

    kills = 0
    for threshold in (0.2, 0.4, 0.6):
        worker = _worker(clean_ods, erp_sim.base_url)
        deadline = time.monotonic() + 300
        while confirmed(clean_ods) < threshold * approved:
            assert worker.poll() is None, "the worker finished before it could be killed"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        kills += 1
    final = _worker(clean_ods, erp_sim.base_url)
    out, _ = final.communicate(timeout=600)
    assert final.returncode == 0, out[-2000:]
    outcome = json.loads(out.decode().strip().splitlines()[-1])["outcome"]
    assert kills == 3

    fired = fired_by_kind(erp_sim.admin("GET", "/faults")["rules"])
    erp_sim.admin("DELETE", "/faults")
    for rule in ("5xx-before", "5xx-after", "drop-before", "drop-after", "429-storm", "latency"):
        assert fired[rule] > 0, f"fault {rule} never fired: {fired}"

    want = _assert_exactly_once(clean_ods, erp_sim)
    assert want.count >= 0.9 * approved
    print(f"\nfault suite: {approved} approved, kills={kills}, faults fired={fired}, final outcome={outcome}")


def _assert_exactly_once(dsn: str, erp: RunningSimulator) -> Any:
    """0 duplicates, 0 missing, the ERP equal to the approved set to the cent; returns the totals."""
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.reconcile import control_totals as ct
    from psa_erp_sync.reconcile import erp_readback

    with psycopg.connect(dsn) as conn:
        bodies = [b for (b,) in conn.execute("SELECT body FROM sim_erp.record WHERE type = 'timebill'")]
        # 0 duplicates by content: one ERP record per PSA entry (the memo names the source id).
        sources = Counter(b["memo"].split()[0] for b in bodies)
        assert [s for s, n in sources.items() if n > 1] == []
        # Nothing left in flight; every parked or rejected record has an open exception with a reason.
        assert_settled(conn)
        want, want_rows = erp_readback.expected(conn, "timebill")
    with NetSuiteClient(base_url=erp.base_url, account_id="A", token="t") as client:
        have, have_rows = erp_readback.actual(client, "timebill", "psa-te-")
    assert erp_readback.differences(want_rows, have_rows)["missing_in_erp"] == 0
    assert erp_readback.differences(want_rows, have_rows)["unexpected_in_erp"] == 0
    ct.assert_equal("expected", want, "erp", have)  # count, hours, amounts per currency, hash total
    return want


def _post(dsn: str, erp: RunningSimulator, run_id: str, *, concurrency: int = 4) -> dict[str, Any]:
    """One posting pass in this process (what one try of the posting task does)."""
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.clients.http import RetryPolicy
    from psa_erp_sync.config import load_config
    from psa_erp_sync.posting.engine import EngineSettings
    from psa_erp_sync.posting.service import post_record_type

    retry = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)
    with NetSuiteClient(base_url=erp.base_url, account_id="A", token="t", timeout=10, retry=retry) as client:
        result = post_record_type(
            dsn=dsn,
            client=client,
            record_type="timebill",
            config=load_config(),
            settings=EngineSettings(max_concurrency=concurrency, progress_every_s=3600),
            run_id=run_id,
        )
    return result.outcome


# Codes a dead letter must never carry: the faults' answers, or a period that closed mid-pass.
NOT_A_RECORDS_FAULT = {
    "INVALID_LOGIN",
    "INJECTED_FAULT",
    "UNKNOWN",
    "SSS_REQUEST_LIMIT_EXCEEDED",
    "PERIOD_CLOSED",
}


def _assert_only_business_dead_letters(dsn: str) -> None:
    """The firm's dirt (inactive jobs, unknown employees...) is rightly dead-lettered; nothing else."""
    letters = _dead_letters(dsn)
    assert not NOT_A_RECORDS_FAULT & set(letters), letters


def _dead_letters(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return dict(
            conn.execute(
                "SELECT reason_code, count(*) FROM exceptions.item WHERE kind = 'dead_letter' GROUP BY 1"
            ).fetchall()
        )


def test_401_on_the_job_poll_after_a_202_fails_the_task_and_the_retry_reads_back(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator
) -> None:
    from psa_erp_sync.clients.erp import ErpAuthFailed

    approved = _prepare(clean_ods, psa_sim, erp_sim, consultants=40)
    # The token expires on the poll of a batch the ERP has accepted (every 5th poll, 3 times).
    erp_sim.admin(
        "PUT",
        "/faults",
        json=[
            {
                "id": "401-poll",
                "action": "status",
                "status": 401,
                "method": "GET",
                "path_regex": r"/async/v1/job/\d+/result$",
                "every_nth": 5,
                "max_hits": 3,
            }
        ],
    )
    refused_jobs: list[str | None] = []
    ambiguous_after_failure: list[int] = []
    for _try in range(1, 8):  # Airflow's retries of the same task
        try:
            _post(clean_ods, erp_sim, "poll-401")
            break
        except ErpAuthFailed as exc:
            refused_jobs.append(exc.job_id)
        with psycopg.connect(clean_ods) as conn:
            left = conn.execute("SELECT count(*) FROM ledger.posting WHERE state = 'ambiguous'").fetchone()
        ambiguous_after_failure.append(int(left[0]) if left else 0)
    else:
        pytest.fail("the posting task never succeeded")
    failures = len(refused_jobs)
    assert None not in refused_jobs  # every refusal came after the ERP had accepted the batch
    assert all(n > 0 for n in ambiguous_after_failure)  # kept for the read-back, not dead letters
    fired = {r["id"]: r["hits"] for r in erp_sim.admin("GET", "/faults")["rules"]}
    erp_sim.admin("DELETE", "/faults")
    assert fired["401-poll"] == 3 and 1 <= failures <= 3  # polls in flight together fail one try
    _assert_only_business_dead_letters(clean_ods)  # nothing dead-lettered by the 401s
    with psycopg.connect(clean_ods) as conn:
        resolved = conn.execute("SELECT count(*) FROM ledger.posting WHERE state = 'resolved'").fetchone()
    assert resolved is not None and resolved[0] > 0  # the accepted batches were read back
    want = _assert_exactly_once(clean_ods, erp_sim)
    assert want.count >= 0.9 * approved


def test_429_on_the_job_poll_is_read_back_never_reposted(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator
) -> None:
    approved = _prepare(clean_ods, psa_sim, erp_sim, consultants=40)
    jobs_before = erp_sim.admin("GET", "/stats")["batch_jobs"]
    # A 429 storm on the result polls: some polls give up after every retry.
    erp_sim.admin(
        "PUT",
        "/faults",
        json=[
            {
                "id": "429-poll",
                "action": "throttle",
                "retry_after": 0,
                "method": "GET",
                "path_regex": r"/async/v1/job/\d+/result$",
                "every_nth": 1,
                "after": 3,
                "max_hits": 24,
            }
        ],
    )
    outcome = _post(clean_ods, erp_sim, "poll-429", concurrency=1)
    fired = {r["id"]: r["hits"] for r in erp_sim.admin("GET", "/faults")["rules"]}
    erp_sim.admin("DELETE", "/faults")
    assert fired["429-poll"] == 24
    assert outcome["ambiguous_resolved"] > 0  # polls that gave up were decided by read-back
    stats = erp_sim.admin("GET", "/stats")
    with psycopg.connect(clean_ods) as conn:
        batches = conn.execute(
            "SELECT count(DISTINCT batch_key) FROM ledger.attempt WHERE batch_key IS NOT NULL"
        ).fetchone()
        # Sent twice only when the read-back found nothing: items the ERP refused in the job.
        resent = conn.execute(
            "SELECT count(*) FROM ledger.posting WHERE attempts > 1 AND state <> 'rejected'"
        ).fetchone()
    assert batches is not None and stats["batch_jobs"] - jobs_before == batches[0]  # one job per batch
    assert resent == (0,)  # nothing the ERP held was sent again
    _assert_only_business_dead_letters(clean_ods)
    want = _assert_exactly_once(clean_ods, erp_sim)
    assert want.count >= 0.9 * approved


def test_a_period_closing_mid_pass_gets_the_entity_policy(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator
) -> None:
    import threading

    _prepare(clean_ods, psa_sim, erp_sim, consultants=60)
    month, nxt = "2026-10", "2026-11"  # the firm's month (open; September and before are closed)
    with psycopg.connect(clean_ods) as conn:
        in_month = conn.execute(
            "SELECT legal_entity, count(*) FROM canonical.time_entry WHERE approved AND NOT is_deleted"
            " AND to_char(spent_date, 'YYYY-MM') = %s GROUP BY 1",
            (month,),
        ).fetchall()
    assert {le for le, _ in in_month} >= {"LE-US1", "LE-UK1"}, in_month
    # Batches take a while, so the close lands while the pass is sending.
    erp_sim.admin(
        "PUT",
        "/faults",
        json=[{"id": "slow", "action": "latency", "path_regex": "/batch$", "latency_ms": 150}],
    )
    total = sum(n for _, n in in_month)
    closed_at: list[int] = []

    def close_when_under_way() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and confirmed(clean_ods) < 0.2 * total:
            time.sleep(0.02)
        closed_at.append(confirmed(clean_ods))
        for entity in ("LE-US1", "LE-US2", "LE-UK1"):
            erp_sim.admin("POST", f"/periods/{entity}-{month}", json={"closed": True, "allLocked": True})

    closer = threading.Thread(target=close_when_under_way)
    closer.start()
    outcome = _post(clean_ods, erp_sim, "close-mid-pass", concurrency=2)
    closer.join()
    erp_sim.admin("DELETE", "/faults")
    assert closed_at and outcome["period_closed_replanned"] > 0, (closed_at, outcome)

    with psycopg.connect(clean_ods) as conn:
        # Every record the ERP refused as PERIOD_CLOSED now has the entity's policy applied.
        rows = conn.execute(
            """
            SELECT r.legal_entity, n.state, n.payload->'postingPeriod'->>'externalId', n.payload->>'memo'
            FROM ledger.posting r
            JOIN LATERAL (SELECT * FROM ledger.posting_full m WHERE m.source_id = r.source_id
                          ORDER BY seq DESC LIMIT 1) n ON true
            JOIN ledger.attempt a ON a.idempotency_key = r.idempotency_key AND a.outcome = 'period-closed'
            """
        ).fetchall()
    assert len(rows) == outcome["period_closed_replanned"]
    for entity, state, period, memo in rows:
        if entity == "LE-UK1":  # policy: park
            assert state == "parked", (entity, state)
        else:  # post_to_first_open: confirmed in the next month, the original period in the memo
            # (rejected: the firm's dirt, e.g. an inactive job, refused in November as well)
            assert state in ("confirmed", "rejected") and period == f"{entity}-{nxt}", (entity, state, period)
            assert f"orig-period:{entity}-" in memo  # its own (closed) period: October, or earlier
    assert {e for e, *_ in rows} >= {"LE-UK1"} and len({e for e, *_ in rows}) >= 2, rows
    assert any(state == "confirmed" for _, state, *_ in rows)
    # None of them dead-lettered as PERIOD_CLOSED.
    _assert_only_business_dead_letters(clean_ods)
    _assert_exactly_once(clean_ods, erp_sim)
    # A second pass (a cleared task) changes nothing.
    again = _post(clean_ods, erp_sim, "close-mid-pass")
    assert again["posted"] == again["period_closed_replanned"] == again["rejected"] == 0
    _assert_exactly_once(clean_ods, erp_sim)


def _lock_holder(dsn: str) -> int | None:
    """The backend holding the posting lock in this database (the worker's lock connection)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()"
            " AND a.application_name = 'psa_erp_sync posting lock'"
        ).fetchone()
    return int(row[0]) if row else None


def test_lock_connection_killed_mid_pass_stops_it_and_the_next_pass_completes(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator
) -> None:
    approved = _prepare(clean_ods, psa_sim, erp_sim, consultants=60)
    assert approved >= 2_000, approved
    erp_sim.admin(
        "PUT",
        "/faults",
        json=[{"id": "slow", "action": "latency", "path_regex": "/batch$", "latency_ms": 300}],
    )
    # Batches of 20, two at a time, 0.3 s each: the pass needs ~20 s, the kill comes at 20 %.
    worker = _worker(
        clean_ods, erp_sim.base_url, "--batch-size", "20", "--concurrency", "2", stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while confirmed(clean_ods) < 0.2 * approved:
        assert worker.poll() is None, "the worker finished before the kill"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)
    holder = _lock_holder(clean_ods)
    assert holder is not None, "no posting lock held mid-pass"
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (holder,)).fetchone() == (True,)
    killed_at = time.monotonic()
    _, err = worker.communicate(timeout=60)
    stopped_after = time.monotonic() - killed_at
    erp_sim.admin("DELETE", "/faults")
    assert worker.returncode == 75, err.decode()[-2000:]
    assert "posting lock" in err.decode() and "lost" in err.decode().splitlines()[-1]
    assert stopped_after < 15, stopped_after  # heartbeat 5 s, then the next batch's check
    at_stop = confirmed(clean_ods)
    assert at_stop < approved, "the pass did not stop: it posted everything"

    final = _worker(clean_ods, erp_sim.base_url)
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0, out[-2000:]
    outcome = json.loads(out.decode().strip().splitlines()[-1])["outcome"]
    assert outcome["posted"] + outcome["already_posted"] + outcome["ambiguous_resolved"] > 0
    want = _assert_exactly_once(clean_ods, erp_sim)
    assert want.count >= 0.9 * approved
    print(f"\nlock kill: {approved} approved, {at_stop} confirmed when the pass stopped, then {outcome}")


def test_faults_are_driven_only_through_the_admin_api(erp_sim: RunningSimulator) -> None:
    erp_sim.admin(
        "PUT", "/faults", json=[{"id": "x", "action": "status", "status": 503, "path_regex": "/suiteql$"}]
    )
    response = httpx.post(
        f"{erp_sim.base_url}/services/rest/query/v1/suiteql",
        json={"q": "SELECT id FROM timebill"},
        headers={"Authorization": "Bearer t"},
    )
    assert response.status_code == 503
    erp_sim.admin("DELETE", "/faults")
