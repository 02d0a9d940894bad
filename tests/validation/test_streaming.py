"""validate_run streams a run a chunk at a time: whatever the chunk size, the same verdicts land."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from psa_erp_sync.config import load_config
from psa_erp_sync.ods import staging
from psa_erp_sync.validation import time_expense as validation
from tests.validation.test_rules import AS_OF, ENTRY, REF


def _entry(entry_id: int, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(ENTRY)
    data.update({"id": entry_id, "notes": f"note {entry_id}"} | changes)
    return data


# Two versions of 3 (the later one is invalid) and of 5 (the later one is valid); 8 duplicates 2
# (same person, day, project, task, hours and notes); 10 is invalid; the rest are clean.
ITEMS = [
    _entry(1),
    _entry(2, notes="same work"),
    _entry(3, updated_at="2026-11-03T10:00:00Z"),
    _entry(3, updated_at="2026-11-04T10:00:00Z", hours="seven"),
    _entry(4),
    _entry(5, updated_at="2026-11-03T10:00:00Z", user={"id": 99, "name": "x"}),
    _entry(5, updated_at="2026-11-04T10:00:00Z"),
    _entry(6),
    _entry(7),
    _entry(8, notes="same work"),
    _entry(9),
    _entry(10, project={"id": 42, "name": "p"}),
]


def _state(conn: psycopg.Connection) -> tuple[Any, ...]:
    canonical = conn.execute(
        "SELECT source_id, version_hash, hours, amount_minor FROM canonical.time_entry ORDER BY source_id"
    ).fetchall()
    items = conn.execute(
        "SELECT source_id, source_version, reason_code, status FROM exceptions.item ORDER BY source_id, reason_code"
    ).fetchall()
    return canonical, items


def _validate(conn: psycopg.Connection, chunk: int, **run: Any) -> validation.ValidationResult:
    """The run ``r1`` of time entries against ``REF`` (or ``run["ref"]``), in a transaction."""
    run.setdefault("ref", REF)
    with conn.transaction():
        return validation.validate_run(
            conn,
            kind="time_entry",
            run_key="r1",
            config=load_config(),
            as_of=AS_OF,
            dag_run_id="run-1",
            chunk=chunk,
            **run,
        )


def _validated_then_emptied(conn: psycopg.Connection) -> tuple[validation.ValidationResult, tuple[Any, ...]]:
    """``ITEMS`` staged in two pages and validated in one chunk: the result and the stored state,
    then what the run wrote emptied (the staged versions stay) for a second run to write again."""
    staging.stage_pages(
        conn, [ITEMS[:5], ITEMS[5:]], run_key="r1", source_system="psa", endpoint="/v2/time_entries"
    )
    conn.commit()
    plain = _validate(conn, chunk=10_000)
    expected = _state(conn)
    conn.execute("TRUNCATE canonical.time_entry, exceptions.item, audit.change")
    conn.commit()
    return plain, expected


def test_chunked_validation_writes_what_one_chunk_writes(clean_ods: str) -> None:
    with psycopg.connect(clean_ods) as conn:
        whole, expected = _validated_then_emptied(conn)
        streamed = _validate(conn, chunk=2)
        assert _state(conn) == expected

    assert (whole.staged_versions, whole.valid, whole.quarantined) == (12, 8, 4)
    assert (streamed.staged_versions, streamed.valid, streamed.quarantined) == (12, 8, 4)
    assert streamed.by_reason == whole.by_reason
    canonical, items = expected
    assert [row[0] for row in canonical] == ["1", "2", "4", "5", "6", "7", "9"]
    # Only the newest version of a record counts: 3 is quarantined, 5 is valid and has no open item.
    assert {(row[0], row[2]) for row in items} == {
        ("3", "SCHEMA_INVALID"),
        ("8", "DUPLICATE_SUSPECTED"),
        ("10", "PROJECT_UNKNOWN"),
    }


def test_the_first_chunk_is_smaller_and_its_rows_are_built_by_the_judging_thread(
    clean_ods: str, monkeypatch: Any
) -> None:
    """The writer starts after ``chunk // FIRST_CHUNK_SHARE`` records, not a whole chunk, and the
    ``COPY`` tuples of a chunk are built by the thread that judges (the writer's chain of
    statements is the run's critical path); what is written stays the same (the test above).
    The common case off: it builds its rows' tuples itself, in the judge (same thread)."""
    monkeypatch.setattr(validation, "COMMON_CASE", False)
    written: list[int] = []
    built_in: set[str] = set()
    write, build_rows = validation._Run.write, validation.records.build_rows

    def counted(run: validation._Run, rows: Any, held: Any, *rest: Any) -> Any:
        written.append(len(rows) + len(held))
        return write(run, rows, held, *rest)

    def noted(*args: Any, **kwargs: Any) -> Any:
        built_in.add(threading.current_thread().name)
        return build_rows(*args, **kwargs)

    monkeypatch.setattr(validation._Run, "write", counted)
    monkeypatch.setattr(validation.records, "build_rows", noted)
    with psycopg.connect(clean_ods) as conn:
        staging.stage_pages(
            conn, [ITEMS[:5], ITEMS[5:]], run_key="r1", source_system="psa", endpoint="/v2/time_entries"
        )
        conn.commit()
        _validate(conn, chunk=5 * validation.FIRST_CHUNK_SHARE)
    # 10 records (12 versions): a first chunk of 5, then the rest (fewer than a whole chunk)
    assert written == [5, 5]
    assert built_in == {threading.main_thread().name}


def test_the_reader_sorts_the_run_while_the_run_sets_up(clean_ods: str, monkeypatch: Any) -> None:
    """The reader's sort and first batch start before the run's setup statements (statistics,
    reference items) finish: they run beside each other, and what is written stays the same."""
    reading = threading.Event()
    read_during_setup: list[bool] = []
    batch_by_ctid, refresh = validation._batch_by_ctid, validation.table_stats.refresh

    def noted_batch(*args: Any) -> Any:
        reading.set()
        return batch_by_ctid(*args)

    def waiting_refresh(*args: Any, **kwargs: Any) -> Any:
        read_during_setup.append(reading.wait(timeout=5))
        return refresh(*args, **kwargs)

    with psycopg.connect(clean_ods) as conn:
        plain, expected = _validated_then_emptied(conn)
        monkeypatch.setattr(validation, "_batch_by_ctid", noted_batch)
        monkeypatch.setattr(validation.table_stats, "refresh", waiting_refresh)
        overlapped = _validate(conn, chunk=10_000)
        assert _state(conn) == expected
    assert read_during_setup == [True]
    assert overlapped.as_dict() == plain.as_dict()


def test_a_chunks_items_are_one_statement_in_one_pipeline(clean_ods: str, monkeypatch: Any) -> None:
    """The writer's chain per chunk: the quarantine items in one statement (not one per item), sent
    with the chunk's other queue statements in one pipeline; what is written stays the same (the
    chunked test above)."""
    pipelined: list[tuple[str, bool]] = []
    bulk = validation.exception_queue.quarantine_bulk

    def refused(*_: Any, **__: Any) -> Any:
        raise AssertionError("one upsert per item")

    def noted_bulk(conn: psycopg.Connection, *args: Any, **kwargs: Any) -> Any:
        pipelined.append((threading.current_thread().name[:17], conn._pipeline is not None))
        return bulk(conn, *args, **kwargs)

    with psycopg.connect(clean_ods) as conn:
        staging.stage_pages(
            conn, [ITEMS[:5], ITEMS[5:]], run_key="r1", source_system="psa", endpoint="/v2/time_entries"
        )
        conn.commit()
        monkeypatch.setattr(validation.exception_queue, "quarantine_bulk", noted_bulk)
        monkeypatch.setattr(validation.exception_queue, "quarantine_many", refused)
        result = _validate(conn, chunk=2 * validation.FIRST_CHUNK_SHARE)
        canonical, items = _state(conn)
    assert (result.staged_versions, result.valid, result.quarantined) == (12, 8, 4)
    assert [row[0] for row in canonical] == ["1", "2", "4", "5", "6", "7", "9"]
    assert {(row[0], row[2]) for row in items} == {
        ("3", "SCHEMA_INVALID"),
        ("8", "DUPLICATE_SUSPECTED"),
        ("10", "PROJECT_UNKNOWN"),
    }
    # the run's reference items (before its first chunk), then each chunk's (10 records: 2 chunks)
    assert pipelined == [("MainThread", False), ("validation-writer", True), ("validation-writer", True)]


def test_a_run_hands_the_interpreter_over_sooner_and_gives_the_interval_back(
    clean_ods: str, monkeypatch: Any
) -> None:
    """While a run lasts, the interpreter switches threads every RUN_SWITCH_INTERVAL (the writer
    and the reader get the GIL back soon after each statement); after it, even a failed one, the
    process's own interval is back."""
    import sys

    seen: list[float] = []
    write = validation._Run.write

    def noted(run: validation._Run, *args: Any) -> Any:
        seen.append(sys.getswitchinterval())
        return write(run, *args)

    monkeypatch.setattr(validation._Run, "write", noted)
    before = sys.getswitchinterval()
    with psycopg.connect(clean_ods) as conn:
        staging.stage_pages(conn, [ITEMS], run_key="r1", source_system="psa", endpoint="/v2/time_entries")
        conn.commit()
        _validate(conn, chunk=2)
        assert seen and set(seen) == {validation.RUN_SWITCH_INTERVAL}
        assert sys.getswitchinterval() == before

        def failing(*_: Any) -> Any:
            raise RuntimeError("the writer failed")

        monkeypatch.setattr(validation._Run, "write", failing)
        try:
            _validate(conn, chunk=2)
        except RuntimeError:
            pass
        else:
            raise AssertionError("the run did not fail")
        assert sys.getswitchinterval() == before


def test_nested_runs_give_the_interval_back_when_the_last_ends() -> None:
    import sys

    before = sys.getswitchinterval()
    with validation._switch_interval_for_run():
        with validation._switch_interval_for_run():
            assert sys.getswitchinterval() == validation.RUN_SWITCH_INTERVAL
        assert sys.getswitchinterval() == validation.RUN_SWITCH_INTERVAL  # the other run still lasts
    assert sys.getswitchinterval() == before


def _reference_noting_the_read(monkeypatch: Any) -> tuple[Callable[..., validation.PsaReference], list[bool]]:
    """A reference builder (``REF``) and what it saw: for each call, whether the reader's first
    batch had started (``_batch_by_ctid`` patched to say so) within 5 s of it."""
    reading = threading.Event()
    built_while_reading: list[bool] = []
    batch_by_ctid = validation._batch_by_ctid

    def noted_batch(*args: Any) -> Any:
        reading.set()
        return batch_by_ctid(*args)

    def reference(*_: Any) -> validation.PsaReference:
        built_while_reading.append(reading.wait(timeout=5))
        return REF

    monkeypatch.setattr(validation, "_batch_by_ctid", noted_batch)
    return reference, built_while_reading


def test_a_reference_the_run_builds_is_built_while_the_reader_sorts(clean_ods: str, monkeypatch: Any) -> None:
    """``ref`` given as a function is called once the reader's sort and first batch have started
    (the two overlap: ``run_step`` and the benchmarks build the reference so); what is written stays
    the same as with the reference built before."""
    with psycopg.connect(clean_ods) as conn:
        plain, expected = _validated_then_emptied(conn)
        reference, built_while_reading = _reference_noting_the_read(monkeypatch)
        built = _validate(conn, chunk=10_000, ref=reference)
        assert _state(conn) == expected
    assert built_while_reading == [True]
    assert built.as_dict() == plain.as_dict()


def test_a_run_read_ahead_writes_what_a_run_reading_for_itself_writes(
    clean_ods: str, monkeypatch: Any
) -> None:
    """``staged_read`` entered before another transaction commits (here: a run of the same versions,
    whose rows are then emptied) and handed to ``validate_run``: the run reads nothing itself and
    writes what a run that reads for itself writes."""
    with psycopg.connect(clean_ods) as conn:
        staging.stage_pages(
            conn, [ITEMS[:5], ITEMS[5:]], run_key="r1", source_system="psa", endpoint="/v2/time_entries"
        )
        conn.commit()
        with validation.staged_read(conn, "time_entry", "r1") as ahead:
            plain = _validate(conn, chunk=2)
            expected = _state(conn)
            conn.execute("TRUNCATE canonical.time_entry, exceptions.item, audit.change")
            conn.commit()

            def refused(*_: Any, **__: Any) -> Any:
                raise AssertionError("the run read its versions itself")

            monkeypatch.setattr(validation, "staged_read", refused)
            read_ahead = _validate(conn, chunk=2, staged=ahead)
            assert _state(conn) == expected
    assert read_ahead.as_dict() == plain.as_dict()


def test_the_validation_step_builds_its_reference_while_the_reader_sorts(
    clean_ods: str, monkeypatch: Any
) -> None:
    """``run_step.validate_staged`` (the DAG's task) hands ``validate_run`` the reference's
    construction, so it runs beside the reader's sort; the step's counts are the same."""
    from psa_erp_sync.validation import run_step

    reference, built_while_reading = _reference_noting_the_read(monkeypatch)
    monkeypatch.setattr(validation.PsaReference, "from_staging", reference)
    with psycopg.connect(clean_ods) as conn:
        staging.stage_pages(
            conn,
            [ITEMS],
            run_key="dag/run-1//v2/time_entries",
            source_system="psa",
            endpoint="/v2/time_entries",
        )
        conn.commit()
        counts = run_step.validate_staged(
            conn, kind="time_entry", dag_id="dag", run_id="run-1", as_of=AS_OF, config=load_config()
        )
    assert built_while_reading == [True]
    assert (counts["staged_versions"], counts["valid"], counts["quarantined"]) == (12, 8, 4)
