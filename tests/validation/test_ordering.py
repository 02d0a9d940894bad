"""Canonical keeps the newest version whatever the commit order (issue 13 item 5).

Batch and stream validate concurrently, so a run that read an older version can commit after a
run that stored a newer one. These tests replay both orderings against a real ODS: the newest
version by (source ``updated_at``, start of the read) wins, and a sweep does not delete what was
read after its own extract began.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from psa_erp_sync.config import load_config
from psa_erp_sync.ods import staging
from psa_erp_sync.stream import time_expense as stream
from psa_erp_sync.validation import time_expense as validation
from tests.validation.test_rules import AS_OF, ENTRY, REF

pytestmark = pytest.mark.integration

ENDPOINT = "/v2/time_entries"
V1 = "2026-11-03T10:00:00Z"
V2 = "2026-11-03T11:00:00Z"


def _entry(entry_id: int, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(ENTRY)
    data.update({"id": entry_id, "notes": f"note {entry_id}"} | changes)
    return data


def _stage(conn: psycopg.Connection, run_key: str, items: list[dict[str, Any]], read_at: datetime) -> None:
    """Stage ``items`` as a batch extract whose read began at ``read_at``."""
    with conn.transaction():
        staging.stage_pages(conn, [items], run_key=run_key, source_system="psa", endpoint=ENDPOINT)
        conn.execute(
            "UPDATE staging.raw_record SET fetched_at = %s WHERE last_run_key = %s", (read_at, run_key)
        )


def _validate(conn: psycopg.Connection, run_key: str) -> validation.ValidationResult:
    with conn.transaction():
        result = validation.validate_run(
            conn,
            kind="time_entry",
            run_key=run_key,
            ref=REF,
            config=load_config(),
            as_of=AS_OF,
            dag_run_id=run_key,
        )
        result.check()
    return result


def _current(conn: psycopg.Connection, source_id: int) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT hours, source_updated_at, is_deleted FROM canonical.time_entry WHERE source_id = %s",
        (str(source_id),),
    ).fetchone()


def _now(conn: psycopg.Connection) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    now: datetime = row[0]
    return now


@pytest.mark.parametrize(
    "stale_commits_last", [True, False], ids=["stale-commits-last", "stale-commits-first"]
)
def test_an_older_updated_at_never_overwrites_a_newer_version(
    clean_ods: str, stale_commits_last: bool
) -> None:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        t0 = _now(conn)
        # The stale run read v1 first; the fresh run read v2 (one hour newer at the source) later.
        _stage(conn, "stale", [_entry(1, hours=1.0, updated_at=V1)], t0)
        _stage(conn, "fresh", [_entry(1, hours=2.0, updated_at=V2)], t0 + timedelta(seconds=5))
        order = ["fresh", "stale"] if stale_commits_last else ["stale", "fresh"]
        results = {run_key: _validate(conn, run_key) for run_key in order}
        # The late stale version is counted as such (and as valid: the accounting identity holds).
        assert results["stale"].stale == (1 if stale_commits_last else 0)
        assert results["stale"].valid == 1
        hours, updated_at, deleted = _current(conn, 1) or (None, None, None)
        assert (float(hours), updated_at.isoformat(), deleted) == (2.0, "2026-11-03T11:00:00+00:00", False)
        # No audited update ever moved the row back in time.
        backwards = conn.execute(
            "SELECT count(*) FROM audit.change WHERE entity = 'canonical.time_entry' AND action = 'update'"
            " AND (before->>'source_updated_at')::timestamptz > (after->>'source_updated_at')::timestamptz"
        ).fetchone()
        assert backwards == (0,)


@pytest.mark.parametrize(
    "stale_commits_last", [True, False], ids=["stale-commits-last", "stale-commits-first"]
)
def test_same_updated_at_the_later_read_wins(clean_ods: str, stale_commits_last: bool) -> None:
    """Harvest's updated_at has whole seconds: two versions of one second are told apart by the
    start of the read that saw them (the later read saw the later state)."""
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        t0 = _now(conn)
        _stage(conn, "early-read", [_entry(1, hours=1.0, updated_at=V1)], t0)
        _stage(conn, "late-read", [_entry(1, hours=3.0, updated_at=V1)], t0 + timedelta(seconds=1))
        order = ["late-read", "early-read"] if stale_commits_last else ["early-read", "late-read"]
        for run_key in order:
            _validate(conn, run_key)
        row = _current(conn, 1)
        assert row is not None and float(row[0]) == 3.0


def test_a_stale_read_does_not_bring_back_a_record_seen_deleted_later(clean_ods: str) -> None:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        t0 = _now(conn)
        _stage(conn, "first", [_entry(1, updated_at=V1)], t0)
        _validate(conn, "first")
        # A run read the record at t0 + 1 s, then the stream saw it gone at t0 + 2 s.
        _stage(conn, "stale", [_entry(1, hours=4.0, updated_at=V2)], t0 + timedelta(seconds=1))
        with conn.transaction():
            stream.mark_gone(conn, "time_entry", ["1"], run_id="stream-1", read_at=t0 + timedelta(seconds=2))
        _validate(conn, "stale")
        row = _current(conn, 1)
        assert row is not None and row[2] is True, "a read older than the deletion resurrected the record"
        # A read that began after the deletion was seen proves the record exists: it comes back.
        _stage(conn, "later", [_entry(1, hours=4.0, updated_at=V2)], t0 + timedelta(seconds=3))
        _validate(conn, "later")
        row = _current(conn, 1)
        assert row is not None and (float(row[0]), row[2]) == (4.0, False)


def _sweep(conn: psycopg.Connection, run_key: str, items: list[dict[str, Any]]) -> None:
    """A sweep extract of spent dates from 2026-11-01, recorded as extract_endpoint records it."""
    with conn.transaction():
        result = staging.stage_pages(conn, [items], run_key=run_key, source_system="psa", endpoint=ENDPOINT)
        staging.record_extract_run(
            conn,
            result,
            source_system="psa",
            endpoint=ENDPOINT,
            mode="sweep",
            window_from=None,
            window_to=AS_OF,
            sweep_from=AS_OF.date().replace(day=1),
        )


def _stream_stage_and_validate(conn: psycopg.Connection, run_key: str, items: list[dict[str, Any]]) -> None:
    with conn.transaction():
        stream.stage_new_versions(conn, items, run_key=run_key, endpoint=ENDPOINT)
    _validate(conn, run_key)


@pytest.mark.parametrize("stream_after_sweep_started", [True, False], ids=["stream-later", "stream-earlier"])
def test_a_sweep_deletes_only_what_was_read_before_its_extract_began(
    clean_ods: str, stream_after_sweep_started: bool
) -> None:
    """Entry 9 is absent from the sweep's read. When the stream staged it *after* the sweep's extract
    began, the sweep's absence proves nothing (the entry may be newer than the sweep's page): it
    stays. When the stream staged it *before*, it was deleted in between: the sweep marks it."""
    others = [_entry(i) for i in range(1, 6)]
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _stage(conn, "baseline", others, _now(conn))
        _validate(conn, "baseline")
        if stream_after_sweep_started:
            _sweep(conn, "sweep", others)
            _stream_stage_and_validate(conn, "stream", [_entry(9)])
        else:
            _stream_stage_and_validate(conn, "stream", [_entry(9)])
            _sweep(conn, "sweep", others)
        result = _validate(conn, "sweep")
        row = _current(conn, 9)
        assert row is not None
        if stream_after_sweep_started:
            assert (row[2], result.deleted) == (False, 0)
        else:
            assert (row[2], result.deleted) == (True, 1)


def test_a_stream_reread_of_an_already_staged_version_undoes_an_earlier_sweep_deletion(
    clean_ods: str,
) -> None:
    """The sweep found entry 9 missing and marked it deleted; a stream re-read that began later gets
    the very version staging already holds (so the stream validates nothing new). The record
    exists after all: the later read wins and it is live again."""
    others = [_entry(i) for i in range(1, 6)]
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _stage(conn, "baseline", [*others, _entry(9)], _now(conn))
        _validate(conn, "baseline")
        _sweep(conn, "sweep", others)
        assert _validate(conn, "sweep").deleted == 1
        with conn.transaction():
            new, known = stream.stage_new_versions(
                conn, [_entry(9)], run_key="stream", endpoint=ENDPOINT, read_at=_now(conn)
            )
        assert (new, known) == (0, 1)
        row = _current(conn, 9)
        assert row is not None and row[2] is False, "a later read of the record left it deleted"
        # A read that began before the sweep's deletion changes nothing.
        _sweep(conn, "sweep-2", others)
        assert _validate(conn, "sweep-2").deleted == 1
        with conn.transaction():
            stream.stage_new_versions(
                conn,
                [_entry(9)],
                run_key="stream-old",
                endpoint=ENDPOINT,
                read_at=_now(conn) - timedelta(hours=1),
            )
        row = _current(conn, 9)
        assert row is not None and row[2] is True


def test_a_stream_reread_of_a_known_version_after_the_sweep_began_keeps_the_record(clean_ods: str) -> None:
    """The stream re-reads entry 9 (a version staging already holds) after the sweep's extract
    began: its read moves the version's fetched_at forward, so the sweep's absence proves nothing."""
    others = [_entry(i) for i in range(1, 6)]
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _stage(conn, "baseline", [*others, _entry(9)], _now(conn) - timedelta(minutes=5))
        _validate(conn, "baseline")
        _sweep(conn, "sweep", others)
        with conn.transaction():
            new, known = stream.stage_new_versions(
                conn, [_entry(9)], run_key="stream", endpoint=ENDPOINT, read_at=_now(conn)
            )
        assert (new, known) == (0, 1)
        assert _validate(conn, "sweep").deleted == 0
        row = _current(conn, 9)
        assert row is not None and row[2] is False
