"""A large run is judged by processes beside the one that reads and writes it (issue 16,
deliverable 2): everything validation writes is the same as when one process judges it all, and
a judge's failure or death fails the run with nothing written that a rerun would not repair.

The month of ``test_canonical_writes`` (a first run of both kinds, then a second run of changed,
stale, new and duplicate time entries, in chunks of 25) is validated with the judge processes
forced on (any run size, batches of 7 versions: a record's versions, a chunk and a fingerprint's
first and second holders fall in different batches and processes) and compared with the same
month judged in one process: every result, canonical row (and its v1 record), exception item,
audit row and queue entry.
"""

from __future__ import annotations

import json
import os
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import psycopg
import pytest

from psa_erp_sync.ods import staging
from psa_erp_sync.validation import time_expense as validation
from tests.validation import test_canonical_writes as month_of

pytestmark = pytest.mark.integration

month = month_of.month


class _Received:
    """Counts the verdicts that came back from a judge process."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        inner = validation._received

        def counted(sent: Any) -> validation.Verdict:
            self.count += 1
            return inner(sent)

        monkeypatch.setattr(validation, "_received", counted)


@pytest.fixture
def apart(monkeypatch: pytest.MonkeyPatch) -> _Received:
    """Judge processes for any run, whatever the machine's load, in batches of 7."""
    monkeypatch.setattr(validation, "_idle_cores", lambda: 2.0)
    monkeypatch.setattr(validation, "JUDGE_APART_FROM", 1)
    monkeypatch.setattr(validation, "_JUDGE_BATCH", 7)
    return _Received(monkeypatch)


@pytest.fixture
def versions(month: str) -> str:
    """The month, its second run with two more versions of each of its first 40 entries (one
    newer, one between), staged after the others: a record's versions straddle where batches of
    7 would cut, and their update order is not their staging order."""
    with psycopg.connect(month) as conn:
        m2 = [
            json.loads(text)
            for (text,) in conn.execute(
                "SELECT payload FROM staging.raw_record WHERE last_run_key = 'm2'"
                " ORDER BY length(source_id), source_id LIMIT 40"
            )
        ]
        extra = []
        for entry in m2:
            extra.append(
                {
                    **entry,
                    "hours": float(entry["hours"]) + 0.5,
                    "updated_at": month_of._later(entry["updated_at"], 120),
                }
            )
            extra.append(
                {
                    **entry,
                    "hours": float(entry["hours"]) + 0.75,
                    "updated_at": month_of._later(entry["updated_at"], 30),
                }
            )
        staging.stage_pages(conn, [extra], run_key="m2", source_system="psa", endpoint="/v2/time_entries")
    return month


@pytest.mark.parametrize("processes", [1, 2])
def test_judge_processes_write_what_one_process_writes(
    versions: str, apart: _Received, monkeypatch: pytest.MonkeyPatch, processes: int
) -> None:
    monkeypatch.setattr(validation, "JUDGE_PROCESSES", 0)
    in_one = month_of._run_month(versions)
    assert apart.count == 0
    monkeypatch.setattr(validation, "JUDGE_PROCESSES", processes)
    judged_apart = month_of._run_month(versions)
    staged = sum(r["staged_versions"] for r in judged_apart[0])
    assert apart.count == staged  # every verdict came from a judge process
    assert judged_apart == in_one
    results, state = judged_apart
    assert results[-1]["by_reason"].get("DUPLICATE_SUSPECTED", 0) >= 1 and results[-1]["stale"] > 0
    assert results[-1]["staged_versions"] >= 180  # m2 with the 80 extra versions
    assert state["m2"]["audit"] and state["m1"]["items"]


def _fail_on(monkeypatch: pytest.MonkeyPatch, source_id: str, how: str) -> None:
    """The judge of ``source_id`` raises (or its process dies) in the judge processes only
    (patched before they fork; this process never judges while they run)."""
    inner = validation.judge_staged
    parent = os.getpid()

    def judge(kind: Any, text: Any, version_hash: str, **kw: Any) -> validation.Verdict:
        verdict = inner(kind, text, version_hash, **kw)
        if os.getpid() != parent and verdict.source_id == source_id:
            if how == "dies":
                os._exit(3)
            raise RuntimeError("judge failed")
        return verdict

    monkeypatch.setattr(validation, "judge_staged", judge)


@pytest.mark.parametrize(("how", "raised"), [("raises", RuntimeError), ("dies", BrokenProcessPool)])
def test_a_judge_that_fails_fails_the_run_and_a_rerun_repairs_it(
    month: str, apart: _Received, monkeypatch: pytest.MonkeyPatch, how: str, raised: type[Exception]
) -> None:
    monkeypatch.setattr(validation, "JUDGE_PROCESSES", 0)
    expected = month_of._run_month(month, runs=("m1",))
    with psycopg.connect(month) as conn:
        staged = conn.execute(
            "SELECT source_id FROM staging.raw_record WHERE last_run_key = 'm1/v2/time_entries'"
            " ORDER BY length(source_id), source_id"
        ).fetchall()
    # a version in the middle of the run: chunks before it were written when it fails
    target = staged[len(staged) * 2 // 3][0]
    monkeypatch.setattr(validation, "JUDGE_PROCESSES", 2)
    _fail_on(monkeypatch, target, how)
    with pytest.raises(raised):
        month_of._run_month(month, runs=("m1",))
    with psycopg.connect(month) as conn:  # the run's transaction rolled back: nothing of it is left
        assert month_of._state(conn) == {
            "canonical.time_entry": [],
            "canonical.expense_entry": [],
            "items": [],
            "audit": [],
            "plan_queue": [],
            "forecast_queue": [],
        }
    monkeypatch.undo()
    monkeypatch.setattr(validation, "_idle_cores", lambda: 2.0)
    monkeypatch.setattr(validation, "JUDGE_APART_FROM", 1)
    monkeypatch.setattr(validation, "_JUDGE_BATCH", 7)
    assert month_of._run_month(month, runs=("m1",)) == expected


def test_without_an_idle_core_the_run_is_judged_here(
    month: str, apart: _Received, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(validation, "JUDGE_PROCESSES", 1)
    monkeypatch.setattr(validation, "_idle_cores", lambda: 0.5)
    month_of._run_month(month, runs=("m1",))
    assert apart.count == 0
    monkeypatch.setattr(validation, "_idle_cores", lambda: 1.0)
    month_of._run_month(month, runs=("m1",))
    assert apart.count > 0
