"""A batch pass hands its posting lock to a waiting stream pass between batches, and takes it back.

Real PostgreSQL and the real PSA and ERP simulators. A month goes through extract and validation;
a batch pass posts it slowly (the ERP takes 0.3 s per batch of 20) while its planner still plans
(chunks of 50); mid-pass, one record not planned yet gets a newer canonical version and a pass
scoped to it (a stream burst's) asks for the lock. The scoped pass must get the lock while the
batch pass still runs, post the newer version, and the batch pass must not send its own plan of
that record (planned from a snapshot older than the scoped pass's posting): one ERP record per
entry, the newer version held, the older posting superseded without an attempt.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator
from tests.posting.staged_firm import assert_settled, confirmed, stage_firm

pytestmark = [pytest.mark.integration]

TODAY = date(2026, 11, 9)
AS_OF = datetime(2026, 11, 9, 12, tzinfo=UTC)


def _pass(
    dsn: str,
    erp: RunningSimulator,
    run_id: str,
    out: dict[str, Any],
    *,
    source_ids: list[str] | None = None,
    hand_off: bool = True,
    wait_s: float = 60.0,
) -> None:
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.posting.engine import EngineSettings
    from psa_erp_sync.posting.service import LockSettings, post_record_type

    settings = EngineSettings(batch_size=20, max_concurrency=2, progress_every_s=3600, plan_chunk=50)
    with NetSuiteClient(base_url=erp.base_url, account_id="A", token="t", timeout=10) as client:
        out["result"] = post_record_type(
            dsn=dsn,
            client=client,
            record_type="timebill",
            config=load_config(),
            settings=settings,
            run_id=run_id,
            lock_settings=LockSettings(wait_s=wait_s, poll_s=0.05, hand_off=hand_off),
            source_ids=source_ids,
        )
    out["ended"] = time.monotonic()


def _last_planned(dsn: str) -> str:
    """The approved record the batch's planner reaches last (it plans in source order)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            'SELECT max(source_id COLLATE "C") FROM canonical.time_entry WHERE approved AND NOT is_deleted'
        ).fetchone()
    assert row is not None and row[0] is not None
    return str(row[0])


def test_a_waiting_stream_pass_gets_the_lock_mid_batch_and_each_record_posts_once(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator
) -> None:
    from simulators.firm.generator import FirmSpec

    spec = FirmSpec(seed=11, consultants=30, customers=20, projects=40, opportunities=2, today=TODAY)
    approved = stage_firm(clean_ods, psa_sim, spec, erp_url=erp_sim.base_url, prefix="handoff", as_of=AS_OF)
    assert approved >= 800, approved
    erp_sim.admin(
        "PUT",
        "/faults",
        json=[{"id": "slow", "action": "latency", "path_regex": "/batch$", "latency_ms": 300}],
    )
    last = _last_planned(clean_ods)
    batch: dict[str, Any] = {}
    runner = threading.Thread(target=_pass, args=(clean_ods, erp_sim, "batch-run", batch))
    runner.start()
    deadline = time.monotonic() + 120
    while confirmed(clean_ods) < 0.15 * approved:
        assert runner.is_alive(), "the batch pass ended before the stream pass asked"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)
    with psycopg.connect(clean_ods) as conn:
        planned = conn.execute("SELECT count(*) FROM ledger.posting WHERE source_id = %s", (last,)).fetchone()
        assert planned == (0,), "the batch's planner already planned the last record: no stale plan to test"
        # A newer version of the record, validated while the batch pass runs (its planner's
        # snapshot still holds the older one).
        conn.execute(
            "UPDATE canonical.time_entry SET version_hash = 'newer-' || version_hash WHERE source_id = %s",
            (last,),
        )
    stream: dict[str, Any] = {}
    asked = time.monotonic()
    _pass(clean_ods, erp_sim, "stream-run", stream, source_ids=[last])
    waited = stream["ended"] - asked
    assert runner.is_alive(), "the stream pass got the lock only once the batch pass had ended"
    runner.join(timeout=300)
    erp_sim.admin("DELETE", "/faults")
    assert not runner.is_alive()

    assert stream["result"].outcome["posted"] == 1, stream["result"].outcome
    assert stream["result"].outcome["total"] == 1  # its own record only, whatever it planned
    assert batch["result"].outcome["hand_offs"] >= 1, batch["result"].outcome
    assert waited < 10, waited  # within a batch of the batch pass, not after its whole pass
    with psycopg.connect(clean_ods) as conn:
        rows = conn.execute(
            "SELECT p.source_version, p.state, count(a.id) FROM ledger.posting p"
            " LEFT JOIN ledger.attempt a USING (idempotency_key) WHERE p.source_id = %s"
            " GROUP BY 1, 2 ORDER BY 1",
            (last,),
        ).fetchall()
        newer = [r for r in rows if r[0].startswith("newer-")]
        older = [r for r in rows if not r[0].startswith("newer-")]
        assert [(s, n) for _, s, n in newer] == [("confirmed", 1)], rows
        assert all(s == "superseded" and n == 0 for _, s, n in older), rows  # planned stale, never sent
        # One ERP record per entry (the memo names the source id), nothing left in flight.
        bodies = [b for (b,) in conn.execute("SELECT body FROM sim_erp.record WHERE type = 'timebill'")]
        assert [s for s, n in Counter(b["memo"].split()[0] for b in bodies).items() if n > 1] == []
        assert_settled(conn)
        posted = conn.execute(
            "SELECT count(DISTINCT source_id) FROM ledger.posting WHERE state IN ('confirmed', 'resolved')"
        ).fetchone()
    assert posted is not None and posted[0] == len(bodies)


# -- hand-overs before the first chunk (the batch pass's engine waits for its planner) ---------------


def _held_back(monkeypatch: pytest.MonkeyPatch, name: str) -> tuple[threading.Event, threading.Event]:
    """Hold the first call of ``planner.<name>`` (the batch pass's: it starts first) until the
    second event is set; the first event says it is being held. Later calls (the burst's) pass."""
    from psa_erp_sync.posting import planner

    original = getattr(planner, name)
    held, resume = threading.Event(), threading.Event()
    calls: list[int] = []
    guard = threading.Lock()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with guard:
            calls.append(1)
            first = len(calls) == 1
        if name == "_fetched":  # a generator over the candidates: held before its first fetch
            if first:
                held.set()
                assert resume.wait(120)
            return original(*args, **kwargs)
        result = original(*args, **kwargs)
        if first:
            held.set()
            assert resume.wait(120)
        return result

    monkeypatch.setattr(planner, name, wrapper)
    return held, resume


def _versions(conn: psycopg.Connection, source_id: str) -> list[tuple[str, str, str, int]]:
    return [
        (str(v), str(a), str(s), int(n))
        for v, a, s, n in conn.execute(
            "SELECT p.source_version, p.action, p.state, count(a.id) FROM ledger.posting p"
            " LEFT JOIN ledger.attempt a USING (idempotency_key) WHERE p.source_id = %s"
            " GROUP BY p.seq, 1, 2, 3 ORDER BY p.seq",
            (source_id,),
        )
    ]


def _one_erp_record_each(conn: psycopg.Connection) -> list[dict[str, Any]]:
    bodies = [b for (b,) in conn.execute("SELECT body FROM sim_erp.record WHERE type = 'timebill'")]
    assert [s for s, n in Counter(b["memo"].split()[0] for b in bodies).items() if n > 1] == []
    assert_settled(conn)
    return bodies


def _held_version(bodies: list[dict[str, Any]], source_id: str) -> str:
    """The version (its first 12 characters, from the memo) the ERP holds of ``source_id``."""
    memo = next(b["memo"] for b in bodies if b["memo"].startswith(f"psa:{source_id} "))
    return str(memo.split()[1].removeprefix("v:"))


def _new_version(dsn: str, source_id: str, tag: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "UPDATE canonical.time_entry SET version_hash = %s || version_hash WHERE source_id = %s"
            " RETURNING version_hash",
            (tag, source_id),
        ).fetchone()
    assert row is not None
    return str(row[0])


def _small_firm(dsn: str, psa: RunningSimulator, erp: RunningSimulator, prefix: str) -> str:
    from simulators.firm.generator import FirmSpec

    spec = FirmSpec(seed=12, consultants=8, customers=6, projects=10, opportunities=2, today=TODAY)
    approved = stage_firm(dsn, psa, spec, erp_url=erp.base_url, prefix=prefix, as_of=AS_OF)
    assert approved >= 100, approved
    return _last_planned(dsn)


def test_a_burst_gets_the_lock_while_the_batch_planner_reads_its_first_candidates(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch pass's planner has taken its snapshot and its candidate read is slow: nothing is
    planned, nothing sent. A waiting burst gets the lock at once (not after the first chunk), and
    what the batch planned from its older snapshot for the burst's record is superseded, unsent."""
    last = _small_firm(clean_ods, psa_sim, erp_sim, "first-read")
    reading, resume = _held_back(monkeypatch, "_fetched")
    batch: dict[str, Any] = {}
    runner = threading.Thread(target=_pass, args=(clean_ods, erp_sim, "batch-run", batch))
    runner.start()
    try:
        assert reading.wait(60), "the batch pass's planner never read its candidates"
        newer = _new_version(clean_ods, last, "newer-")
        stream: dict[str, Any] = {}
        asked = time.monotonic()
        _pass(clean_ods, erp_sim, "stream-run", stream, source_ids=[last], wait_s=20.0)
        waited = stream["ended"] - asked
    finally:
        resume.set()
        runner.join(timeout=300)
    assert not runner.is_alive()
    assert waited < 10, waited
    assert stream["result"].outcome["posted"] == 1, stream["result"].outcome
    assert batch["result"].outcome["hand_offs"] >= 1, batch["result"].outcome
    with psycopg.connect(clean_ods) as conn:
        rows = _versions(conn, last)
        # The burst's post of the newer version; the batch's stale post of the older, superseded.
        assert [(v, s, n) for v, _, s, n in rows if v == newer] == [(newer, "confirmed", 1)], rows
        assert [(s, n) for v, _, s, n in rows if v != newer] == [("superseded", 0)], rows
        bodies = _one_erp_record_each(conn)
        posted = conn.execute(
            "SELECT count(DISTINCT source_id) FROM ledger.posting WHERE state IN ('confirmed', 'resolved')"
        ).fetchone()
    assert posted is not None and posted[0] == len(bodies)
    assert _held_version(bodies, last) == newer[:12]


def test_a_hand_over_before_the_planner_snapshot_needs_no_guard(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock handed over before the batch pass's planner took its snapshot: the snapshot sees
    all the burst wrote, so nothing it plans is stale. A change after the burst (a third version)
    is planned by the batch pass and sent, not superseded as if the burst had overtaken it."""
    last = _small_firm(clean_ods, psa_sim, erp_sim, "before-snapshot")
    paused, resume = _held_back(monkeypatch, "_records_to_plan")
    batch: dict[str, Any] = {}
    runner = threading.Thread(target=_pass, args=(clean_ods, erp_sim, "batch-run", batch))
    runner.start()
    try:
        assert paused.wait(60), "the batch pass's planner never started"
        second = _new_version(clean_ods, last, "second-")
        stream: dict[str, Any] = {}
        asked = time.monotonic()
        _pass(clean_ods, erp_sim, "stream-run", stream, source_ids=[last], wait_s=20.0)
        waited = stream["ended"] - asked
        third = _new_version(clean_ods, last, "third-")
    finally:
        resume.set()
        runner.join(timeout=300)
    assert not runner.is_alive()
    assert waited < 10, waited
    assert stream["result"].outcome["posted"] == 1, stream["result"].outcome
    assert batch["result"].outcome["hand_offs"] >= 1, batch["result"].outcome
    with psycopg.connect(clean_ods) as conn:
        rows = _versions(conn, last)
        assert [(v, a, s, n) for v, a, s, n in rows] == [
            (second, "post", "confirmed", 1),
            (third, "adjust", "confirmed", 1),
        ], rows
        bodies = _one_erp_record_each(conn)
    assert _held_version(bodies, last) == third[:12]
