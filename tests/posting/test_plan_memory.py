"""The planner's memory is bounded by its chunk, not by the month (issue 16, deliverable 5).

A plan handed on chunk by chunk (as the posting service's planner thread runs it) holds the chunk
being planned and the candidates read from the server cursor at a time (``planner.FETCH_ROWS``, at
most a chunk's worth): the month's other candidates stay on the server. Measured with
``tracemalloc`` (the peak of Python's allocations during the plan) for a month and for a month
four times its size, the same chunk: the peaks must be about the same. With the whole month read
ahead in one fetch (20,000 rows before), the larger month's peak was ~1.5x the smaller's here
(9.9 against 6.5 MB; ~3x at 600 / 2,400 records). The months are 2,400 and 9,600 records: at 600
the small month's peak moved 1.6-2.4 MB between runs of the same code (how many of its few chunks
the writer thread still held), so the ratio did too (1.08-1.54); at these sizes it is 0.99-1.06.
Each plan runs in a child process: ``tracemalloc`` counts every thread's allocations, and in the
suite's worker other tests' threads (simulators, pools) added up to ~0.9 MB to a peak (1.41 once).
Real PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tracemalloc
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest

from psa_erp_sync.config import load_config
from psa_erp_sync.posting import ledger, planner
from psa_erp_sync.posting.periods import PeriodBook
from tests.routing.conftest import router_of

pytestmark = pytest.mark.integration

CHUNK = 200
DAY = date(2026, 11, 10)


def _periods() -> PeriodBook:
    return PeriodBook.from_rows(
        {
            "externalid": f"{entity}-2026-11",
            "subsidiary": entity,
            "startdate": date(2026, 11, 1),
            "enddate": date(2026, 11, 30),
            "closed": "F",
        }
        for entity in ("LE-UK1", "LE-US1")
    )


def _month(dsn: str, first: int, count: int) -> None:
    """``count`` approved time entries (source ids ``first``..), none planned yet."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref,
                project_ref, legal_entity, hours, billable, bill_rate_minor, amount_minor, currency, approved,
                is_deleted, fingerprint, source_updated_at, record)
            SELECT 'psa', i::text, 'v1-' || i, %(day)s, '7', '42', 'LE-US1', 1.50, true, 10000 + i, 15000 + i,
                   'USD', true, false, 'v1-' || i, now(), '{}'::jsonb
            FROM generate_series(%(first)s::int, %(last)s::int) AS i
            """,
            {"day": DAY, "first": first, "last": first + count - 1},
        )


def _handed_slowly(handed: list[int], postings: list[Any]) -> None:
    """The chunk noted, then 10 ms (the writer's thread): every plan runs with the writer behind
    and a chunk waiting for it, so the peak is that of a full pipeline in both months whatever
    the machine's load (on a busy machine the small month's pipeline was sometimes full and
    sometimes not: a ratio of 1.41-1.54 for the same code)."""
    handed.append(len(postings))
    time.sleep(0.01)


def _plan_peak(dsn: str) -> tuple[int, list[int]]:
    """The peak of Python's allocations while a chunked plan runs (bytes), and the chunks' sizes."""
    handed: list[int] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        tracemalloc.start()
        try:
            planner.plan(
                conn,
                record_type="timebill",
                config=load_config(),
                periods=_periods(),
                dag_run_id="memory",
                router=router_of(),
                chunk=CHUNK,
                on_chunk=lambda postings: _handed_slowly(handed, postings),  # sent and dropped
                full=True,
            )
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return peak, handed


def _plan_peak_apart(dsn: str) -> tuple[int, list[int]]:
    """:func:`_plan_peak` in a child process, whose only threads are the plan's."""
    code = (
        "import json, sys; from tests.posting.test_plan_memory import _plan_peak;"
        " print(json.dumps(_plan_peak(sys.argv[1])))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code, dsn], capture_output=True, text=True, check=True, cwd=root
    )
    peak, chunks = json.loads(out.stdout.splitlines()[-1])
    return int(peak), [int(c) for c in chunks]


def test_a_plan_holds_a_chunk_whatever_the_month(clean_ods: str) -> None:
    small, large = 2_400, 9_600
    _month(clean_ods, 1, small)
    small_peak, small_chunks = _plan_peak_apart(clean_ods)
    # A month four times the size: the first month's records are pending (not candidates again).
    _month(clean_ods, small + 1, large)
    large_peak, large_chunks = _plan_peak_apart(clean_ods)

    # Nothing lost: every record planned once, handed on in chunks of at most CHUNK.
    assert sum(small_chunks) == small and sum(large_chunks) == large
    assert max(small_chunks + large_chunks) <= CHUNK
    with psycopg.connect(clean_ods) as conn:
        assert ledger.count_in_state(conn, "timebill", ["pending"]) == small + large
    # Four times the month, about the same memory (the whole month read ahead: ~1.5x).
    assert large_peak < 1.3 * small_peak, (small_peak, large_peak)
