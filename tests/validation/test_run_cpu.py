"""A validation run's client CPU outside the judging (branch perf-validation13, issue 16 deliverable
2): the cyclic collector relaxed for the run (one state with posting's passes) and given back on
every exit path; the reader's ``fetched_at`` in UTC, the same instant (perf-validation16: by psycopg's
own loader in a UTC transaction); a chunk's resolve sent before its own items.

Real PostgreSQL for the run and the reader.
"""

from __future__ import annotations

import gc
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from psa_erp_sync.ods import collector, staging
from psa_erp_sync.posting import service
from psa_erp_sync.validation import time_expense as validation
from tests.validation.test_streaming import ITEMS, _state, _validate

pytestmark = pytest.mark.integration

ENDPOINT = "/v2/time_entries"


def test_a_run_relaxes_the_collector_and_gives_it_back(clean_ods: str, monkeypatch: Any) -> None:
    """While a run lasts (its writer thread included) the heap held before it is frozen and the
    thresholds are RUN_GC_THRESHOLDS; after it, even a failed one, both are as before."""
    seen: list[tuple[tuple[int, int, int], int]] = []
    write = validation._Run.write

    def noted(run: validation._Run, *args: Any) -> Any:
        seen.append((gc.get_threshold(), gc.get_freeze_count()))
        return write(run, *args)

    monkeypatch.setattr(validation._Run, "write", noted)
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with psycopg.connect(clean_ods) as conn:
        staging.stage_pages(conn, [ITEMS], run_key="r1", source_system="psa", endpoint=ENDPOINT)
        conn.commit()
        _validate(conn, chunk=2)
        assert seen and {t for t, _ in seen} == {validation.RUN_GC_THRESHOLDS}
        assert all(count > frozen for _, count in seen)
        assert (gc.get_threshold(), gc.get_freeze_count()) == (before, frozen)

        def failing(*_: Any) -> Any:
            raise RuntimeError("the writer failed")

        monkeypatch.setattr(validation._Run, "write", failing)
        with pytest.raises(RuntimeError, match="the writer failed"):
            _validate(conn, chunk=2)
        assert (gc.get_threshold(), gc.get_freeze_count()) == (before, frozen)


def test_a_run_without_the_relaxed_collector_stores_the_same(clean_ods: str, monkeypatch: Any) -> None:
    states = []
    for thresholds in (None, validation.RUN_GC_THRESHOLDS):
        monkeypatch.setattr(validation, "RUN_GC_THRESHOLDS", thresholds)
        with psycopg.connect(clean_ods) as conn:
            conn.execute("TRUNCATE staging.raw_record, canonical.time_entry, exceptions.item")
            staging.stage_pages(conn, [ITEMS], run_key="r1", source_system="psa", endpoint=ENDPOINT)
            conn.commit()
            _validate(conn, chunk=3)
            states.append(_state(conn))
    assert states[0] == states[1] and states[0][0]


def test_posting_and_validation_share_one_collector_state() -> None:
    """A posting pass and a validation run overlapping in one process: the last to end gives back
    the thresholds found before the first began (not the other's), and only then unfreezes."""
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with service.collector_for_pass():
        with validation._collector_for_run():
            assert gc.get_threshold() == service.PASS_GC_THRESHOLDS  # the first to enter sets them
        assert gc.get_threshold() == service.PASS_GC_THRESHOLDS
        assert gc.get_freeze_count() > frozen
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, frozen)
    run = validation._collector_for_run()
    run.__enter__()
    posting = service.collector_for_pass()
    posting.__enter__()
    run.__exit__(None, None, None)  # the run ends first, the pass still runs
    assert gc.get_threshold() == validation.RUN_GC_THRESHOLDS and gc.get_freeze_count() > frozen
    posting.__exit__(None, None, None)
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, frozen)
    with pytest.raises(ValueError, match="the pass failed"), collector.relaxed((1_000, 10, 10)):
        raise ValueError("the pass failed")
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, frozen)


class _Cycle:
    """An object in a reference cycle, reporting its collection."""

    def __init__(self, collected: list[str]) -> None:
        self.me, self.collected = self, collected

    def __del__(self) -> None:
        self.collected.append("collected")


def test_garbage_left_before_a_relaxed_block_is_collected_not_frozen() -> None:
    """A block's first entry collects before it freezes: a cycle the process dropped before (one a
    validation run's relaxed collector left waiting) is freed, not moved to the permanent
    generation for the whole of the next pass (the month-end peak's posting held ~140 MB of it)."""
    gc.collect()
    saved = gc.get_threshold()
    collected: list[str] = []
    gc.disable()  # no collection between the drop and the block: the block's own must free it
    try:
        _Cycle(collected)  # unreachable at once, freed only by the cyclic collector
        assert collected == []
        with collector.relaxed((1_000_000, 1_000, 1_000)):
            assert collected == ["collected"]
    finally:
        gc.enable()
        gc.set_threshold(*saved)


def test_the_reader_gives_fetched_at_in_utc(clean_ods: str) -> None:
    """Whatever the reader's session time zone: the instant PostgreSQL stored, as a ``datetime.UTC``
    datetime, by psycopg's own loader (the reader's transaction is in UTC; no Python call per row);
    the session's zone as it was after the read."""
    with psycopg.connect(clean_ods) as conn:
        staging.stage_pages(conn, [ITEMS[:6]], run_key="r1", source_system="psa", endpoint=ENDPOINT)
        conn.commit()  # a second read, a later fetched_at
        staging.stage_pages(conn, [ITEMS[6:]], run_key="r2", source_system="psa", endpoint=ENDPOINT)
        conn.execute("UPDATE staging.raw_record SET last_run_key = 'r1'")
        conn.commit()
        stored: dict[str, datetime] = dict(
            conn.execute("SELECT payload_hash, fetched_at FROM staging.raw_record").fetchall()
        )
        assert len(set(stored.values())) == 2
    with psycopg.connect(clean_ods, options="-c timezone=Asia/Kolkata") as reader:
        zones: list[str | None] = []
        read = []
        for version in validation._staged(reader, "psa", ENDPOINT, "r1"):
            zones.append(reader.info.parameter_status("TimeZone"))
            read.append(version)
        reader.rollback()
        assert reader.info.parameter_status("TimeZone") == "Asia/Kolkata"
    assert set(zones) == {"UTC"}
    assert len(read) == len(ITEMS)
    for _, version_hash, _, read_at in read:
        assert read_at == stored[version_hash] and read_at.tzinfo is UTC
    assert [json.loads(r[0])["id"] for r in read] == sorted(i["id"] for i in ITEMS)


def _copy_row(source_id: str, hours: Decimal, rate: Decimal) -> tuple[Any, ...]:
    at = datetime(2026, 11, 3, 10, tzinfo=UTC)
    return (
        *("psa", source_id, "h" * 64, date(2026, 11, 3), "12", "34", "56", "US01", hours, True, 15000),
        *(112500, "USD", True, False, "f" * 64, at, 112500, "USD", rate, None, None, at),
    )


def test_a_copys_numeric_values_are_dumped_once_per_object(clean_ods: str, monkeypatch: Any) -> None:
    """The same stored numerics as psycopg's plain ``COPY``, psycopg's dump made once per value
    object of the ``COPY``, not once per row; equal values of another scale keep their own bytes."""
    shared, one = Decimal("7.50"), Decimal(1)
    hours = [shared, Decimal("7.5"), shared, Decimal("-0.00"), Decimal("1E+2"), shared]
    hours += [Decimal("1234567.125"), Decimal("0.25"), Decimal("7.50")]
    built = {str(i): _copy_row(str(i), h, one) for i, h in enumerate(hours)}
    rows = [{"source_id": key} for key in built]
    dumped: list[object] = []
    init = validation._NumericOnce.__init__

    def counting(self: validation._NumericOnce, cls: type, context: Any = None) -> None:
        init(self, cls, context)
        dump = self._dump

        def counted(obj: object) -> Any:
            dumped.append(obj)
            return dump(obj)

        self._dump = counted

    monkeypatch.setattr(validation._NumericOnce, "__init__", counting)
    read = "SELECT source_id, hours::text, fx_rate::text FROM {} ORDER BY source_id::int"
    with psycopg.connect(clean_ods) as conn:
        conn.execute("CREATE TEMP TABLE plain AS SELECT * FROM canonical.time_entry LIMIT 0")
        conn.execute("CREATE TEMP TABLE memo AS SELECT * FROM canonical.time_entry LIMIT 0")
        types = validation._copy_types(conn, "time_entry")
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY plain ({validation._copied('time_entry')}) FROM STDIN (FORMAT binary)") as copy,
        ):
            copy.set_types(types)
            for row in rows:
                copy.write_row(built[row["source_id"]])
        validation._copy_rows(conn, "time_entry", "memo", rows, built)
        plain, memo = (
            conn.execute(read.format("plain")).fetchall(),
            conn.execute(read.format("memo")).fetchall(),
        )
    assert memo == plain and [r[1] for r in memo][:5] == ["7.50", "7.50", "7.50", "0.00", "100.00"]
    assert len(dumped) == len({id(h) for h in hours}) + 1  # each object once, the shared rate once
    once = validation._NumericOnce(Decimal)
    assert bytes(once.dump(Decimal("7.5")) or b"") != bytes(once.dump(Decimal("7.50")) or b"")


def test_a_chunk_resolves_before_it_writes_its_own_items(clean_ods: str, monkeypatch: Any) -> None:
    """Each chunk's resolve is sent before its quarantine items (so on a new month the chunk's
    key range holds no item, and the resolve's range probe answers for its ids)."""
    from psa_erp_sync.ods import exceptions as queue

    sent: list[str] = []
    for name in ("resolving_for", "quarantine_bulk"):
        original = getattr(queue, name)

        def noted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            sent.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(queue, name, noted)
    write = validation._Run.write

    def marked(run: validation._Run, *args: Any) -> Any:
        sent.append("write")
        return write(run, *args)

    monkeypatch.setattr(validation._Run, "write", marked)
    bad = [{**item, "hours": -1} if i % 3 == 0 else item for i, item in enumerate(ITEMS)]
    with psycopg.connect(clean_ods) as conn:
        staging.stage_pages(conn, [bad], run_key="r1", source_system="psa", endpoint=ENDPOINT)
        conn.commit()
        result = _validate(conn, chunk=3)
    assert result.valid and result.quarantined
    writes = "|".join(sent).split("write")[1:]
    assert writes and all(w.strip("|") == "resolving_for|quarantine_bulk" for w in writes), sent
