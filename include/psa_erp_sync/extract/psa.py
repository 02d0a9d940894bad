"""Incremental and sweep extracts of PSA endpoints into staging.

Incremental reads use ``updated_since = high watermark - overlap`` (inclusive on the PSA side,
and the overlap absorbs second-precision timestamps, clock skew and commits that land late), so a
record changed later the same day is never missed; re-reading a record is harmless because
staging dedupes by (source id, content hash). Sweeps re-read a window of spent dates to catch
what ``updated_since`` cannot show: deletions (Harvest has no deleted feed) and unapprovals
that were not announced. The watermark advances in the same transaction as the staged rows.

Pages are read ahead: a worker thread walks the PSA's pages (the HTTP request, the split of a page
into items) while the caller's thread stages the pages before them, through a queue of at most
:data:`READ_AHEAD_PAGES` pages (memory bounded by a few pages; the cursor walk itself stays one
request at a time, as Harvest's cursor and rate limit want). Nothing about durability changes:
every page is staged in the caller's one transaction, and a failure of the reader (an HTTP error,
retries run out) is raised in the caller's thread before the watermark moves, so the transaction
rolls back as before.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec
import psycopg

from psa_erp_sync.contracts.kinds import TRANSACTIONAL_ENDPOINTS
from psa_erp_sync.ods import staging

log = logging.getLogger(__name__)

Mode = Literal["incremental", "sweep", "full"]
TRANSACTIONAL = TRANSACTIONAL_ENDPOINTS


@runtime_checkable
class PageSource(Protocol):
    def iter_pages(self, path: str, params: dict[str, Any]) -> Iterator[list[dict[str, Any]]]: ...


@runtime_checkable
class RawPageSource(PageSource, Protocol):
    """A source that can also hand over each item's JSON as sent (``HarvestClient``): staged as is."""

    def iter_raw_pages(self, path: str, params: dict[str, Any]) -> Iterator[list[msgspec.Raw]]: ...


def _pages_of(client: PageSource, endpoint: str, params: dict[str, Any]) -> Iterator[Sequence[object]]:
    """The raw pages when the client has them (no decode and re-encode per record), else decoded ones."""
    if isinstance(client, RawPageSource):
        return client.iter_raw_pages(endpoint, params)
    return client.iter_pages(endpoint, params)


@dataclass(frozen=True)
class Window:
    mode: Mode
    updated_since: datetime | None
    from_date: date | None
    to_date: date | None
    window_to: datetime

    def queries(self, per_page: int) -> list[dict[str, Any]]:
        """The reads this window needs. A sweep is the incremental read *plus* a re-read of recent
        spent dates: the PSA ANDs its filters, so one query could not do both."""
        queries: list[dict[str, Any]] = []
        if self.mode == "full":
            return [{"per_page": per_page}]
        if self.updated_since is not None:
            queries.append(
                {"per_page": per_page, "updated_since": self.updated_since.strftime("%Y-%m-%dT%H:%M:%SZ")}
            )
        if self.mode == "sweep" and self.from_date is not None:
            query: dict[str, Any] = {"per_page": per_page, "from": self.from_date.isoformat()}
            if self.to_date is not None:
                query["to"] = self.to_date.isoformat()
            queries.append(query)
        return queries

    @property
    def deletion_horizon(self) -> date | None:
        """Spent dates from which absence in this read means "deleted at the source"."""
        if self.mode == "full":
            return date.min
        return self.from_date if self.mode == "sweep" else None


def plan_window(
    watermark: datetime | None, *, mode: Mode, as_of: datetime, overlap: timedelta, sweep_days: int
) -> Window:
    """Decide what to read. The first run of an endpoint (no watermark) reads everything."""
    if mode == "full" or watermark is None:
        return Window("full", None, None, None, as_of)
    since = watermark - overlap
    if mode == "sweep":
        # From the first day of the month that holds (as of - sweep days): whole months, so a
        # month still open for correction is always re-read completely.
        horizon = (as_of.date() - timedelta(days=sweep_days)).replace(day=1)
        return Window("sweep", since, horizon, None, as_of)
    return Window("incremental", since, None, None, as_of)


#: Pages the reader thread may fetch ahead of staging (0: read in the caller's thread, no thread).
READ_AHEAD_PAGES = 2
_POLL_S = 0.1


def read_ahead(
    pages: Iterator[Sequence[object]], depth: int = READ_AHEAD_PAGES
) -> Generator[Sequence[object], None, None]:
    """``pages``, each fetched by a worker thread while the caller works on the ones before it.

    At most ``depth`` pages wait in the queue. An exception of the reader is raised here, in the
    caller's thread, in its place in the order (after the pages read before it). When the caller
    stops early (an error while staging, a generator closed), the reader stops after the page it is
    fetching and is joined before this returns, so the client is never used by two threads at once.
    """
    if depth <= 0:
        yield from pages
        return
    waiting: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for page in pages:
                if not hand_over(("page", page)):
                    return
        except BaseException as exc:  # raised in the caller's thread
            hand_over(("error", exc))
            return
        hand_over(("end", None))

    thread = threading.Thread(target=reader, name="psa-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = waiting.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()
        close = getattr(pages, "close", None)
        if close is not None:
            close()


def run_key_for(dag_id: str, run_id: str, endpoint: str) -> str:
    """Stable across task retries and clears of the same DAG run."""
    return f"{dag_id}/{run_id}/{endpoint}"


def extract_endpoint(
    conn: psycopg.Connection,
    client: PageSource,
    *,
    endpoint: str,
    run_key: str,
    window: Window,
    per_page: int,
    source_system: str = "psa",
    progress: Callable[[int, float], None] | None = None,
    read_ahead_pages: int = READ_AHEAD_PAGES,
) -> staging.StageResult:
    """Stream one endpoint into staging and advance its watermark, in one transaction.

    Pages are fetched up to ``read_ahead_pages`` ahead of staging by a worker thread
    (:func:`read_ahead`; 0: in this thread)."""
    queries = window.queries(per_page) if endpoint in TRANSACTIONAL else [{"per_page": per_page}]
    pages = read_ahead(
        (page for params in queries for page in _pages_of(client, endpoint, params)), read_ahead_pages
    )
    # Closed on the way out, whatever happens: the reader thread is stopped and joined here, not
    # whenever an exception's traceback lets go of the generator.
    with closing(pages), conn.transaction():
        result = staging.stage_pages(
            conn,
            pages,
            run_key=run_key,
            source_system=source_system,
            endpoint=endpoint,
            progress=progress,
        )
        staging.record_extract_run(
            conn,
            result,
            source_system=source_system,
            endpoint=endpoint,
            mode=window.mode if endpoint in TRANSACTIONAL else "full",
            window_from=window.updated_since,
            window_to=window.window_to,
            sweep_from=window.deletion_horizon if endpoint in TRANSACTIONAL else None,
        )
        if endpoint in TRANSACTIONAL:
            staging.advance_watermark(
                conn, source_system, endpoint, result.max_updated_at, swept=window.mode in ("sweep", "full")
            )
    log.info(
        "staged %s %s: extracted %d, new versions %d, known %d (%.0f rows/s)",
        source_system,
        endpoint,
        result.extracted,
        result.new_versions,
        result.known_versions,
        result.rows_per_second,
    )
    return result
