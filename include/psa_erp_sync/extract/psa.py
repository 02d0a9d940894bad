"""Incremental and sweep extracts of PSA endpoints into staging.

Incremental reads use ``updated_since = high watermark - overlap`` (inclusive on the PSA side,
and the overlap absorbs second-precision timestamps, clock skew and commits that land late), so a
record changed later the same day is never missed; re-reading a record is harmless because
staging dedupes by (source id, content hash). Sweeps re-read a window of spent dates to catch
what ``updated_since`` cannot show: deletions (Harvest has no deleted feed) and unapprovals
that were not announced. The watermark advances in the same transaction as the staged rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
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
) -> staging.StageResult:
    """Stream one endpoint into staging and advance its watermark, in one transaction."""
    queries = window.queries(per_page) if endpoint in TRANSACTIONAL else [{"per_page": per_page}]
    pages = (page for params in queries for page in _pages_of(client, endpoint, params))
    with conn.transaction():
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
