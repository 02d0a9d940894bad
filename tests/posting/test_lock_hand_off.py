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
            lock_settings=LockSettings(wait_s=60.0, poll_s=0.05, hand_off=hand_off),
            source_ids=source_ids,
        )
    out["ended"] = time.monotonic()


def posted_once(dsn: str, last: str, latest: str) -> list[tuple[Any, ...]]:
    """The record ``last``'s postings by version (source version, state, attempts), once its
    ``latest`` version is confirmed with one attempt, every entry reached the ERP once (the memo
    names the source id) and the ledger settled (nothing left in flight)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT p.source_version, p.state, count(a.id) FROM ledger.posting p"
            " LEFT JOIN ledger.attempt a USING (idempotency_key) WHERE p.source_id = %s"
            " GROUP BY 1, 2 ORDER BY 1",
            (last,),
        ).fetchall()
        bodies = [b for (b,) in conn.execute("SELECT body FROM sim_erp.record WHERE type = 'timebill'")]
        assert [s for s, n in Counter(b["memo"].split()[0] for b in bodies).items() if n > 1] == []
        assert_settled(conn)
        posted = conn.execute(
            "SELECT count(DISTINCT source_id) FROM ledger.posting WHERE state IN ('confirmed', 'resolved')"
        ).fetchone()
    assert posted is not None and posted[0] == len(bodies)
    assert [(s, n) for v, s, n in rows if v.startswith(latest)] == [("confirmed", 1)], rows
    return rows


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
    rows = posted_once(clean_ods, last, "newer-")
    older = [r for r in rows if not r[0].startswith("newer-")]
    assert all(s == "superseded" and n == 0 for _, s, n in older), rows  # planned stale, never sent
