"""A large run is read and judged by a process beside the task's (issue 16, deliverable 2):
everything validation writes is the same as when the task's process judges it all, and the judge's
failure or death fails the run with nothing of it written.

The month of ``test_canonical_writes`` (a first run of both kinds, then a second run of changed,
stale, new and duplicate time entries, written in chunks of 25), its second run with two more
versions of 40 entries staged out of update order, is validated with the judge process forced on
(any run size, 7 versions a message: a record's versions, a chunk and a fingerprint's first and
second holders fall in different messages) and compared with the same month judged in the task's
process: every result, canonical row (and its v1 record), exception item, audit row and queue entry.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

from psa_erp_sync.ods import staging
from psa_erp_sync.validation import judge_apart
from psa_erp_sync.validation import time_expense as validation
from tests.validation import test_canonical_writes as month_of

pytestmark = pytest.mark.integration

month = month_of.month


class _Received:
    """Counts the verdicts that came from a judge process (read in the task's process)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        inner = validation._received

        def counted(verdicts: Any, run: Any) -> Any:
            for verdict in inner(verdicts, run):
                self.count += 1
                yield verdict

        monkeypatch.setattr(validation, "_received", counted)


@pytest.fixture(params=["forked", "interpreter"])
def apart(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[_Received]:
    """A judge process for any run, 7 versions a message: forked (as if no other thread ran; the
    simulator's server thread is never touched by the fork) or a new interpreter."""
    started: list[str] = []
    for name in ("_forked", "_interpreter"):
        inner = getattr(judge_apart, name)

        def noted(*args: Any, _inner: Any = inner, _name: str = name) -> Any:
            started.append(_name)
            return _inner(*args)

        monkeypatch.setattr(judge_apart, name, noted)
    monkeypatch.setattr(judge_apart, "_alone", lambda: request.param == "forked")
    monkeypatch.setattr(judge_apart, "FROM_VERSIONS", 1)
    monkeypatch.setattr(judge_apart, "BATCH", 7)
    monkeypatch.setattr(judge_apart, "MAX_CPU_PRESSURE", None)  # whatever the machine's load
    yield _Received(monkeypatch)
    assert started and set(started) == {f"_{request.param}"}, started


@pytest.fixture
def versions(month: str) -> str:
    """The month, its second run with two more versions of each of its first 40 entries (one
    newer, one between), staged after the others: a record's versions straddle where messages of
    7 cut, and their update order is not their staging order."""
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
            for hours, seconds in ((0.5, 120), (0.75, 30)):
                extra.append(
                    {
                        **entry,
                        "hours": float(entry["hours"]) + hours,
                        "updated_at": month_of._later(entry["updated_at"], seconds),
                    }
                )
        staging.stage_pages(conn, [extra], run_key="m2", source_system="psa", endpoint="/v2/time_entries")
    return month


def test_a_judged_run_writes_what_the_task_process_writes(
    versions: str, apart: _Received, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(judge_apart, "ENABLED", False)
    in_one = month_of._run_month(versions)
    assert apart.count == 0
    monkeypatch.setattr(judge_apart, "ENABLED", True)
    judged_apart = month_of._run_month(versions)
    staged = sum(r["staged_versions"] for r in judged_apart[0])
    assert apart.count == staged  # every verdict came from the judge process
    assert judged_apart == in_one
    results, state = judged_apart
    assert results[-1]["by_reason"].get("DUPLICATE_SUSPECTED", 0) >= 1 and results[-1]["stale"] > 0
    assert results[-1]["staged_versions"] >= 180  # m2 with the 80 extra versions
    assert state["m2"]["audit"] and state["m1"]["items"]


def test_a_row_the_build_refuses_is_sent_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid row the ``COPY`` build refuses travels as its verdict: the task's process builds it
    only if it writes it (the version may be superseded), and fails the run then, as in-process."""
    row = {
        "source_system": "psa",
        "source_id": "1",
        "version_hash": "h",
        "legal_entity": "LE",
        "fingerprint": "f",
    }
    refused = validation.Verdict("1", "h", "LE", None, {}, row)
    monkeypatch.setattr(validation._Judge, "__call__", lambda self, version: refused)
    judge = validation._Judge("time_entry", "r", _NO_REFERENCE, _NO_CONFIG, datetime.min, "psa")
    assert judge.packed([("{}", "h", "1", datetime.min)]) == [refused]


_NO_REFERENCE: Any = None
_NO_CONFIG: Any = None


class _FailingJudge(validation._Judge):
    """In the judge process: raises (or the process exits) at the version of ``FAIL_AT``'s id."""

    def __call__(self, version: tuple[str, str, str, datetime]) -> validation.Verdict:
        target, how = os.environ["FAIL_AT"].split(":")
        if version[2] == target:
            if how == "dies":
                os._exit(3)
            raise RuntimeError("judge failed")
        return super().__call__(version)


@pytest.mark.parametrize("how", ["raises", "dies"])
def test_a_judge_that_fails_fails_the_run_and_a_rerun_repairs_it(
    month: str, apart: _Received, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr(judge_apart, "ENABLED", False)
    expected = month_of._run_month(month, runs=("m1",))
    monkeypatch.setattr(judge_apart, "ENABLED", True)
    with psycopg.connect(month) as conn:
        staged = conn.execute(
            "SELECT source_id FROM staging.raw_record WHERE last_run_key = 'm1/v2/time_entries'"
            " ORDER BY length(source_id), source_id"
        ).fetchall()
    # a version two thirds into the run: chunks before it were written when it fails
    monkeypatch.setenv("FAIL_AT", f"{staged[len(staged) * 2 // 3][0]}:{how}")
    judge = validation._Judge
    monkeypatch.setattr(validation, "_Judge", _FailingJudge)
    with pytest.raises(
        judge_apart.JudgeProcessFailed, match="judge failed" if how == "raises" else "exit code 3"
    ):
        month_of._run_month(month, runs=("m1",))
    assert apart.count > 0
    with psycopg.connect(month) as conn:  # the run's transaction rolled back: nothing of it is left
        assert month_of._state(conn) == {
            "canonical.time_entry": [],
            "canonical.expense_entry": [],
            "items": [],
            "audit": [],
            "plan_queue": [],
            "forecast_queue": [],
        }
    monkeypatch.setattr(validation, "_Judge", judge)
    assert month_of._run_month(month, runs=("m1",)) == expected


def test_a_small_run_is_judged_in_the_task_process(month: str, monkeypatch: pytest.MonkeyPatch) -> None:
    received = _Received(monkeypatch)
    month_of._run_month(month, runs=("m1",))  # FROM_VERSIONS as shipped: far above the month
    assert received.count == 0


def test_a_process_with_other_threads_starts_a_new_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork copies no other thread, but whatever lock one holds (a logging handler's, an SSL
    library's): the fork is taken only when this thread is alone."""
    with monkeypatch.context() as alone:
        alone.setattr(threading, "active_count", lambda: 1)
        assert judge_apart._alone()
    done = threading.Event()
    other = threading.Thread(target=done.wait)
    other.start()
    try:
        assert not judge_apart._alone()
    finally:
        done.set()
        other.join()


@pytest.mark.parametrize(("pressure", "apart"), [(0.5, False), (0.05, True), (None, True)])
def test_the_judge_starts_only_when_no_task_waits_for_a_cpu(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch, pressure: float | None, apart: bool
) -> None:
    """Busy cores (some task waited for a CPU in over 10 % of the last 10 s): judged in the task's
    process; unknown pressure (no PSI): by size alone."""
    monkeypatch.setattr(judge_apart, "FROM_VERSIONS", 1)
    monkeypatch.setattr(judge_apart, "cpu_pressure", lambda: pressure)
    with psycopg.connect(clean_ods) as conn:
        staging.stage_pages(
            conn, [[{"id": 1}]], run_key="r1", source_system="psa", endpoint="/v2/time_entries"
        )
        assert judge_apart.wanted(conn, "psa", "/v2/time_entries", "r1") is apart


def test_the_cpu_pressure_is_read_as_a_share() -> None:
    pressure = judge_apart.cpu_pressure()
    assert pressure is None or 0.0 <= pressure <= 1.0
