"""Pages read ahead of staging (issue 16, deliverable 5): a worker thread fetches the PSA's pages
while the caller stages the ones before them. Order, the bound on what is held, a reader's failure
raised in the caller, the reader stopped and joined when the caller stops early; and against real
PostgreSQL: the same staged rows, counts and watermark as reading in the caller's thread, and a
failure after some pages leaves nothing staged and the watermark where it was."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import pytest

from psa_erp_sync.extract import psa as psa_extract
from psa_erp_sync.extract.psa import read_ahead
from psa_erp_sync.ods import staging


class _Source:
    """Numbered pages; records which thread produced each, how far ahead of the consumer it ran,
    and whether it was closed."""

    def __init__(self, pages: int, *, fail_at: int | None = None, delay: float = 0.0) -> None:
        self.pages, self.fail_at, self.delay = pages, fail_at, delay
        self.produced = 0
        self.threads: set[int] = set()
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[list[int]]:
        try:
            for n in range(self.pages):
                if self.fail_at == n:
                    raise RuntimeError(f"page {n} failed")
                time.sleep(self.delay)
                self.threads.add(threading.get_ident())
                self.produced += 1
                yield [n]
        finally:
            self.closed.set()


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "psa-read-ahead"]


def test_every_page_arrives_in_order_fetched_by_another_thread() -> None:
    source = _Source(25)
    got = [page[0] for page in read_ahead(iter(source), 3)]
    assert got == list(range(25))
    assert source.threads and threading.get_ident() not in source.threads
    assert not _reader_threads()


def test_depth_zero_reads_in_the_callers_thread() -> None:
    source = _Source(4)
    assert [page[0] for page in read_ahead(iter(source), 0)] == [0, 1, 2, 3]
    assert source.threads == {threading.get_ident()}


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_the_reader_holds_at_most_depth_pages_ahead(depth: int) -> None:
    source = _Source(30)
    ahead = []
    for page in read_ahead(iter(source), depth):
        time.sleep(0.005)  # a slow consumer: the reader fills the queue and waits
        # consumed: page[0] + 1; produced beyond that sit in the queue, plus one in the reader's hand
        ahead.append(source.produced - (page[0] + 1))
    assert max(ahead) <= depth + 1
    assert max(ahead) >= depth  # it did read ahead


def test_a_failure_of_the_reader_is_raised_in_the_caller_after_the_pages_before_it() -> None:
    source = _Source(10, fail_at=4)
    got: list[int] = []
    with pytest.raises(RuntimeError, match="page 4 failed"):
        got.extend(page[0] for page in read_ahead(iter(source), 2))
    assert got == [0, 1, 2, 3]
    assert not _reader_threads()


def test_a_caller_that_stops_early_stops_and_joins_the_reader_and_closes_the_source() -> None:
    source = _Source(1000, delay=0.001)
    pages = read_ahead(iter(source), 2)
    for page in pages:
        if page[0] == 3:
            break
    pages.close()  # what extract_endpoint's ``closing`` does on any way out
    assert not _reader_threads()
    assert source.closed.is_set()
    produced = source.produced
    time.sleep(0.05)
    assert source.produced == produced <= 3 + 1 + 2 + 1  # nothing fetched after close returned


# --- against real PostgreSQL ----------------------------------------------------------------------


def _raw_pages(n_pages: int, per_page: int) -> list[list[msgspec.Raw]]:
    return [
        [
            msgspec.Raw(
                msgspec.json.encode(
                    {
                        "id": p * per_page + i,
                        "hours": 1.25,
                        "updated_at": f"2026-11-{1 + p % 28:02d}T08:00:00Z",
                    }
                )
            )
            for i in range(per_page)
        ]
        for p in range(n_pages)
    ]


class _Client:
    """A PSA client of raw pages (as ``HarvestClient``): fails with ``error`` before page
    ``fail_at``; records the threads that fetched."""

    def __init__(self, pages: list[list[msgspec.Raw]], *, fail_at: int | None = None) -> None:
        self.pages, self.fail_at = pages, fail_at
        self.threads: set[int] = set()

    def iter_pages(self, path: str, params: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        raise AssertionError("the raw pages are read")

    def iter_raw_pages(self, path: str, params: dict[str, Any]) -> Iterator[list[msgspec.Raw]]:
        for n, page in enumerate(self.pages):
            if n == self.fail_at:
                raise ConnectionError("PSA went away")
            self.threads.add(threading.get_ident())
            yield page


WINDOW = psa_extract.plan_window(
    None, mode="full", as_of=datetime(2026, 12, 1, tzinfo=UTC), overlap=timedelta(hours=1), sweep_days=45
)


def _staged(conn: psycopg.Connection) -> set[tuple[str, str, str]]:
    return {
        (r[0], r[1], r[2])
        for r in conn.execute("SELECT source_id, payload_hash, payload FROM staging.raw_record")
    }


def _extract(conn: psycopg.Connection, client: _Client, run_key: str, depth: int) -> staging.StageResult:
    return psa_extract.extract_endpoint(
        conn,
        client,
        endpoint="/v2/time_entries",
        run_key=run_key,
        window=WINDOW,
        per_page=500,
        read_ahead_pages=depth,
    )


def test_read_ahead_stages_what_reading_in_the_callers_thread_stages(clean_ods: str) -> None:
    pages = _raw_pages(9, 500)
    with psycopg.connect(clean_ods) as conn:
        plain = _extract(conn, _Client(pages), "plain", 0)
        rows_plain = _staged(conn)
        mark_plain = staging.get_watermark(conn, "psa", "/v2/time_entries")
        conn.execute("TRUNCATE staging.raw_record, staging.watermark, staging.extract_run")
        conn.commit()
        client = _Client(pages)
        ahead = _extract(conn, client, "ahead", 2)
        assert threading.get_ident() not in client.threads
        assert _staged(conn) == rows_plain and len(rows_plain) == 4500
        assert staging.get_watermark(conn, "psa", "/v2/time_entries") == mark_plain
        again = _extract(conn, _Client(pages), "again", 2)  # a re-read: every version known
    assert (ahead.extracted, ahead.new_versions, ahead.known_versions, ahead.max_updated_at) == (
        plain.extracted,
        plain.new_versions,
        plain.known_versions,
        plain.max_updated_at,
    )
    assert (again.new_versions, again.known_versions) == (0, 4500)


def test_a_psa_failure_after_some_pages_stages_nothing_and_keeps_the_watermark(clean_ods: str) -> None:
    pages = _raw_pages(8, 500)
    with psycopg.connect(clean_ods) as conn:
        _extract(conn, _Client(pages[:2]), "first", 2)
        before = (_staged(conn), staging.get_watermark(conn, "psa", "/v2/time_entries"))
        with pytest.raises(ConnectionError, match="PSA went away"):
            _extract(conn, _Client(pages, fail_at=6), "second", 2)
        assert not _reader_threads()  # stopped and joined before the error reached the caller
        assert (_staged(conn), staging.get_watermark(conn, "psa", "/v2/time_entries")) == before
        runs = [r[0] for r in conn.execute("SELECT run_key FROM staging.extract_run ORDER BY run_key")]
    assert runs == ["first"]


def test_a_failure_while_staging_stops_the_reader_before_it_reaches_the_caller(clean_ods: str) -> None:
    served: list[int] = []

    class Endless(_Client):
        def iter_raw_pages(self, path: str, params: dict[str, Any]) -> Iterator[list[msgspec.Raw]]:
            for n, page in enumerate(_raw_pages(10_000, 2)):  # far more than the queue holds
                served.append(n)
                yield page

    def progress(done: int, seconds: float) -> None:
        if done >= 6:
            raise RuntimeError("staging failed")

    with psycopg.connect(clean_ods) as conn:
        with pytest.raises(RuntimeError, match="staging failed"):
            psa_extract.extract_endpoint(
                conn,
                Endless([]),
                endpoint="/v2/time_entries",
                run_key="bad",
                window=WINDOW,
                per_page=2,
                progress=progress,
                read_ahead_pages=2,
            )
        assert not _reader_threads()
        assert _staged(conn) == set()
        assert staging.get_watermark(conn, "psa", "/v2/time_entries") is None
    assert len(served) <= 3 + 2 + 1  # stopped a page or so past the failure, not at the end
