"""The planner's throughput (branch perf-posting4): the candidates read column by column, in small
fetches first, and each chunk written while the next is planned, with the same ledger rows, the same
order of commits and the same failure semantics as a plan that wrote each chunk itself.

Real PostgreSQL; the chunks are handed to a callback as the posting service's engine receives them.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest

from psa_erp_sync.config import load_config
from psa_erp_sync.contracts import records
from psa_erp_sync.posting import ledger, planner
from psa_erp_sync.posting.periods import PeriodBook

pytestmark = pytest.mark.integration

NOV = (date(2026, 11, 1), date(2026, 11, 30))


def _periods() -> PeriodBook:
    return PeriodBook.from_rows(
        {"externalid": f"{e}-2026-11", "subsidiary": e, "startdate": NOV[0], "enddate": NOV[1], "closed": "F"}
        for e in ("LE-US1", "LE-UK1")
    )


def _entries(conn: psycopg.Connection, n: int) -> None:
    """``n`` approved time entries; every third in GBP at a rate to USD, one without a task."""
    conn.execute(
        """
        INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref, project_ref,
            task_ref, legal_entity, hours, billable, bill_rate_minor, amount_minor, currency, approved, fingerprint,
            source_updated_at, record, functional_amount_minor, functional_currency, fx_rate)
        SELECT 'psa', lpad(i::text, 4, '0'), md5('v' || i), DATE '2026-11-02' + i %% 20, 'u' || i %% 7, 'p' || i %% 3,
               CASE WHEN i = 1 THEN NULL ELSE 't' || i END, CASE WHEN i %% 3 = 0 THEN 'LE-UK1' ELSE 'LE-US1' END,
               1.25 * (1 + i %% 4), i %% 2 = 0, 15000, 18750 * (1 + i %% 4), CASE WHEN i %% 3 = 0 THEN 'GBP' ELSE 'USD' END,
               true, md5('f' || i), TIMESTAMPTZ '2026-11-20 10:00+00' + i * interval '1 minute', '{}'::jsonb,
               CASE WHEN i %% 3 = 0 THEN 23719 * (1 + i %% 4) END, CASE WHEN i %% 3 = 0 THEN 'USD' END,
               CASE WHEN i %% 3 = 0 THEN 1.2650000000 END
        FROM generate_series(1, %s) i
        """,
        (n,),
    )


def _plan(dsn: str, chunk: int, on_chunk: Any) -> planner.Plan:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return planner.plan(
            conn,
            record_type="timebill",
            config=load_config(),
            periods=_periods(),
            dag_run_id="pipeline",
            chunk=chunk,
            on_chunk=on_chunk,
        )


def _keys(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [
            r[0] for r in conn.execute("SELECT idempotency_key FROM ledger.posting ORDER BY seq").fetchall()
        ]


def test_the_next_chunk_is_planned_while_the_last_is_written(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entries(conn, 30)
    planned = threading.Event()
    overlapped: list[bool] = []
    calls = {"n": 0}
    plan_change, insert = planner._plan_change, ledger.insert_planned

    def counting(pl: Any, cand: dict[str, Any]) -> bool:
        calls["n"] += 1
        if calls["n"] > 4:  # a record of the second chunk (chunks of 4)
            planned.set()
        return plan_change(pl, cand)

    def slow_insert(conn: psycopg.Connection, postings: Any) -> set[str]:
        if not overlapped:  # the first chunk's write waits until the second chunk is being planned
            overlapped.append(planned.wait(10))
        return insert(conn, postings)

    monkeypatch.setattr(planner, "_plan_change", counting)
    monkeypatch.setattr(planner.ledger, "insert_planned", slow_insert)
    handed: list[list[str]] = []
    result = _plan(clean_ods, 4, lambda postings: handed.append([p.idempotency_key for p in postings]))
    assert overlapped == [True]  # a plan writing its own chunks waits the 10 s and fails here
    assert result.planned["post"] == 30
    assert [len(c) for c in handed] == [4] * 7 + [2]
    assert [k for c in handed for k in c] == _keys(clean_ods)  # handed on in the order committed


def test_after_a_failed_chunk_no_later_chunk_is_written(clean_ods: str) -> None:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entries(conn, 30)
    handed: list[list[str]] = []

    def engine_dies(postings: list[ledger.Posting]) -> None:
        handed.append([p.idempotency_key for p in postings])
        if len(handed) == 2:
            raise RuntimeError("the engine died after the second chunk committed")

    with pytest.raises(RuntimeError, match="second chunk"):
        _plan(clean_ods, 4, engine_dies)
    assert len(handed) == 2
    assert _keys(clean_ods) == [k for c in handed for k in c]  # the two chunks, nothing after them
    # The next plan plans the rest (the committed ones are pending: the engine's).
    rest = _plan(clean_ods, 4, lambda postings: None)
    assert rest.planned["post"] == 22
    assert len(set(_keys(clean_ods))) == 30


def test_a_planner_failure_leaves_every_chunk_handed_before_it_written(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entries(conn, 30)
    plan_change, calls = planner._plan_change, {"n": 0}

    def fails_at_the_ninth(pl: Any, cand: dict[str, Any]) -> bool:
        calls["n"] += 1
        if calls["n"] == 9:
            raise ValueError("a record the plan cannot decide")
        return plan_change(pl, cand)

    monkeypatch.setattr(planner, "_plan_change", fails_at_the_ninth)
    handed: list[list[ledger.Posting]] = []
    with pytest.raises(ValueError, match="cannot decide"):
        _plan(clean_ods, 4, handed.append)
    assert [len(c) for c in handed] == [4, 4]  # both chunks planned before the failure: written, handed on
    assert len(_keys(clean_ods)) == 8


_FORMER_DESIRED = """
    SELECT d.source_id,
           ((to_jsonb(d.*) - 'record') || jsonb_build_object('fx_rate', d.fx_rate::text, 'hours', d.hours::text))::text
    FROM canonical.time_entry d ORDER BY d.source_id
"""


def test_candidates_carry_the_desired_row_as_values_deciding_as_the_former_json(clean_ods: str) -> None:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entries(conn, 9)
        former = {sid: msgspec.json.decode(row.encode()) for sid, row in conn.execute(_FORMER_DESIRED)}
    with psycopg.connect(clean_ods) as reader:
        cands = list(planner._candidates(reader, "timebill"))
    assert len(cands) == 9
    for cand in cands:
        desired, row = cand["desired"], former[cand["source_id"]]
        # Python values, no JSON built or decoded per row (before: ISO strings decoded from JSON)
        assert isinstance(desired["spent_date"], date) and isinstance(desired["hours"], Decimal)
        assert cand["record"] == records.from_row("time_entry", row)
        assert planner.functional_of(desired) == planner.functional_of(row)
        assert planner.foreign_rate(desired) == planner.foreign_rate(row)
    assert planner.foreign_rate(cands[2]["desired"]) == Decimal("1.265")


def test_the_candidates_are_fetched_small_first(clean_ods: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entries(conn, 30)
    monkeypatch.setattr(planner, "FETCH_SIZES", (4, 16))
    sizes: list[int] = []
    fetchmany = psycopg.ServerCursor.fetchmany

    def spy(self: psycopg.ServerCursor[Any], size: int = 0) -> list[Any]:
        sizes.append(size)
        return fetchmany(self, size)

    monkeypatch.setattr(psycopg.ServerCursor, "fetchmany", spy)
    with psycopg.connect(clean_ods) as reader:
        assert len(list(planner._candidates(reader, "timebill"))) == 30
    assert sizes == [4, 16, 16]  # the first rows before the rest are read


def _posting(i: int) -> ledger.Posting:
    key = f"{i:08d}" + "k" * 32
    payload = {"externalId": f"psa-te-{i}", "tranDate": "2026-11-03", "memo": f"psa:{i} " + "m" * 400}
    return ledger.Posting(key, "timebill", "psa", str(i), "v" * 32, f"psa-te-{i}", "post", "pending", payload)


def test_a_chunk_of_postings_is_inserted_without_spilling_to_disk(clean_ods: str) -> None:
    """The planner's largest chunk (5,000 postings with ~450-byte payloads) at PostgreSQL's default
    ``work_mem``: no temporary file (the former single statement sorted the payloads on disk)."""
    postings = [_posting(i) for i in range(5000)]
    postings.append(replace(postings[7], payload={"externalId": "a second posting of one key"}))
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute("SET work_mem = '4MB'")

        def temp_files() -> int:
            conn.execute("SELECT pg_stat_force_next_flush()")
            row = conn.execute(
                "SELECT temp_files FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
            assert row is not None
            return int(row[0])

        before = temp_files()
        with conn.transaction():
            inserted = ledger.insert_planned(conn, postings)
        assert temp_files() == before
        assert len(inserted) == 5000
        assert ledger.insert_planned(conn, postings[:10]) == set()  # existing keys are left alone
        payload = conn.execute(
            "SELECT payload FROM ledger.posting_payload WHERE idempotency_key = %s",
            (postings[7].idempotency_key,),
        ).fetchone()
        assert (
            payload is not None and payload[0] == postings[7].payload
        )  # a key given twice: its first posting's
        count = conn.execute("SELECT count(*) FROM ledger.posting_payload").fetchone()
        assert count is not None and count[0] == 5000
