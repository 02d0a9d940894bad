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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, Protocol

import psycopg

from psa_erp_sync.ods import staging

log = logging.getLogger(__name__)

Mode = Literal["incremental", "sweep", "full"]
TRANSACTIONAL = ("/v2/time_entries", "/v2/expenses")


class PageSource(Protocol):
    def iter_pages(self, path: str, params: dict[str, Any]) -> Iterator[list[dict[str, Any]]]: ...


@dataclass(frozen=True)
class Window:
    mode: Mode
    updated_since: datetime | None
    from_date: date | None
    to_date: date | None
    window_to: datetime

    def params(self, per_page: int) -> dict[str, Any]:
        params: dict[str, Any] = {"per_page": per_page}
        if self.updated_since is not None:
            params["updated_since"] = self.updated_since.strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.from_date is not None:
            params["from"] = self.from_date.isoformat()
        if self.to_date is not None:
            params["to"] = self.to_date.isoformat()
        return params


def plan_window(
    watermark: datetime | None, *, mode: Mode, as_of: datetime, overlap: timedelta, sweep_days: int
) -> Window:
    """Decide what to read. A first incremental run (no watermark) becomes a sweep."""
    if mode == "full":
        return Window("full", None, None, None, as_of)
    if mode == "sweep" or watermark is None:
        return Window("sweep", None, as_of.date() - timedelta(days=sweep_days), None, as_of)
    return Window("incremental", watermark - overlap, None, None, as_of)


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
    params = window.params(per_page) if endpoint in TRANSACTIONAL else {"per_page": per_page}
    with conn.transaction():
        result = staging.stage_pages(
            conn,
            client.iter_pages(endpoint, params),
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
        )
        if endpoint in TRANSACTIONAL:
            staging.advance_watermark(
                conn, source_system, endpoint, result.max_updated_at, swept=window.mode == "sweep"
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
