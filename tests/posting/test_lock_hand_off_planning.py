"""A batch pass hands its posting lock to a waiting stream pass while its engine waits for the
planner, not only between batches (issue 16, deliverable 6; branch perf-stream5).

Real PostgreSQL and the real PSA and ERP simulators, as ``test_lock_hand_off.py``. The batch
pass's planner is held (its second chunk's write, or everything before its snapshot) while a pass
scoped to one record (a stream burst's) asks for the lock: the scoped pass must get it within
seconds, not after the hold, and every record must reach the ERP once, in its latest version.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator
from tests.posting.staged_firm import stage_firm
from tests.posting.test_lock_hand_off import AS_OF, TODAY, _last_planned, _pass, posted_once

pytestmark = [pytest.mark.integration]

HOLD_S = 20.0


@pytest.fixture
def firm(clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator) -> tuple[str, str]:
    from simulators.firm.generator import FirmSpec

    spec = FirmSpec(seed=11, consultants=30, customers=20, projects=40, opportunities=2, today=TODAY)
    approved = stage_firm(clean_ods, psa_sim, spec, erp_url=erp_sim.base_url, prefix="handoff", as_of=AS_OF)
    assert approved >= 800, approved
    return clean_ods, _last_planned(clean_ods)


def _version(dsn: str, source_id: str, prefix: str) -> None:
    """A newer canonical version of the record (as validation writes one)."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE canonical.time_entry SET version_hash = %s || version_hash WHERE source_id = %s",
            (prefix, source_id),
        )


def _stream_pass_during_hold(
    dsn: str, erp: RunningSimulator, last: str, held: threading.Event, release: threading.Event
) -> tuple[dict[str, Any], dict[str, Any], float, threading.Thread]:
    batch: dict[str, Any] = {}
    runner = threading.Thread(target=_pass, args=(dsn, erp, "batch-run", batch))
    runner.start()
    assert held.wait(120), "the batch's planner never reached the hold"
    _version(dsn, last, "newer-")
    stream: dict[str, Any] = {}
    asked = time.monotonic()
    try:
        _pass(dsn, erp, "stream-run", stream, source_ids=[last])
    finally:
        release.set()
    return batch, stream, stream["ended"] - asked, runner


def test_the_lock_is_handed_over_while_the_engine_waits_for_the_next_chunk(
    firm: tuple[str, str], erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from psa_erp_sync.posting import planner

    dsn, last = firm
    held, release = threading.Event(), threading.Event()
    write, writes = planner._write_chunk, Counter[str]()

    def slow_write(*args: Any, dag_run_id: str, **kwargs: Any) -> None:
        writes[dag_run_id] += 1
        if dag_run_id == "batch-run" and writes[dag_run_id] == 2:  # the planner stalls mid-plan
            held.set()
            release.wait(HOLD_S)
        write(*args, dag_run_id=dag_run_id, **kwargs)

    monkeypatch.setattr(planner, "_write_chunk", slow_write)
    batch, stream, waited, runner = _stream_pass_during_hold(dsn, erp_sim, last, held, release)
    runner.join(timeout=300)
    assert not runner.is_alive()
    # On the old engine the scoped pass waited the whole hold: it handed over between batches only.
    assert waited < HOLD_S / 2, waited
    assert stream["result"].outcome["posted"] == 1, stream["result"].outcome
    assert batch["result"].outcome["hand_offs"] >= 1, batch["result"].outcome
    rows = posted_once(dsn, last, "newer-")
    # The batch planned the record from its older snapshot after the hand-over: never sent.
    assert all(s == "superseded" and n == 0 for v, s, n in rows if not v.startswith("newer-")), rows


def test_a_hand_over_before_the_planners_snapshot_does_not_supersede_what_it_plans(
    firm: tuple[str, str], erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scoped pass gets the lock before the batch's planner took its snapshot; a third version
    validated after it is in that snapshot and must be posted by the batch pass, not superseded
    as if it had been planned from a snapshot older than the scoped pass's posting."""
    from psa_erp_sync.posting import planner

    dsn, last = firm
    held, release = threading.Event(), threading.Event()
    json_loads, calls = planner.set_json_loads, []

    def held_first(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 1:  # the batch's plan: its reader is open, its snapshot not taken yet
            held.set()
            release.wait(HOLD_S)
        json_loads(*args, **kwargs)

    monkeypatch.setattr(planner, "set_json_loads", held_first)
    original_set = release.set
    monkeypatch.setattr(release, "set", lambda: (_version(dsn, last, "third-"), original_set()))
    batch, stream, waited, runner = _stream_pass_during_hold(dsn, erp_sim, last, held, release)
    runner.join(timeout=300)
    assert not runner.is_alive()
    assert waited < HOLD_S / 2, waited  # the old engine handed over only once batches were sent
    assert stream["result"].outcome["posted"] == 1, stream["result"].outcome
    assert batch["result"].outcome["hand_offs"] >= 1, batch["result"].outcome
    rows = posted_once(dsn, last, "third-")
    assert [(s, n) for v, s, n in rows if v.startswith("newer-")] == [("confirmed", 1)], rows
