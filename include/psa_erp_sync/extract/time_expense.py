"""The extract step of the time & expense run: PSA endpoints into staging, each with its window.

Everything a run needs comes in as arguments (the DAG and run ids the run keys derive from, the
run's as-of, the requested mode, the extract settings): the operator reads them from its
Airflow context (:class:`psa_erp_sync.operators.time_expense.PsaExtractOperator`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg

from psa_erp_sync.config import Config
from psa_erp_sync.extract import psa as psa_extract
from psa_erp_sync.ods import staging

log = logging.getLogger(__name__)

PSA = "psa"
#: A sweep (re-read of recent spent dates, which catches deletions) at least this often in ``auto``.
SWEEP_EVERY = timedelta(days=1)


def progress_logger(endpoint: str, every: int = 50_000) -> Callable[[int, float], None]:
    """A progress callback that logs the rows read so far every ``every`` rows."""
    state = {"next": 0}

    def report(done: int, seconds: float) -> None:
        if done >= state["next"]:
            rate = done / seconds if seconds > 0 else 0.0
            log.info("extracting %s: %d rows so far (%.0f rows/s)", endpoint, done, rate)
            state["next"] = done + every

    return report


def last_sweep_at(conn: psycopg.Connection, source_system: str, endpoint: str) -> datetime | None:
    row = conn.execute(
        "SELECT last_sweep_at FROM staging.watermark WHERE source_system = %s AND endpoint = %s",
        (source_system, endpoint),
    ).fetchone()
    return row[0] if row else None


def resolve_mode(requested: str, last_sweep: datetime | None, as_of: datetime) -> str:
    """``auto`` is a sweep when the last sweep is missing or over :data:`SWEEP_EVERY` old, else
    incremental; any other mode is taken as asked."""
    if requested != "auto":
        return requested
    return "sweep" if last_sweep is None or as_of - last_sweep > SWEEP_EVERY else "incremental"


def extract_endpoints(
    conn: psycopg.Connection,
    client: psa_extract.PageSource,
    *,
    endpoints: Sequence[str],
    mode: str,
    dag_id: str,
    run_id: str,
    as_of: datetime,
    config: Config,
) -> dict[str, Any]:
    """Stage each endpoint (one transaction each, watermark advanced with it); a summary per endpoint.

    The window's overlap, the sweep's reach and the page size are ``extract`` of
    ``config/mappings.yaml``."""
    settings = config.mappings.extract
    summary: dict[str, Any] = {}
    for endpoint in endpoints:
        watermark = staging.get_watermark(conn, PSA, endpoint)
        requested = mode or "auto"
        if requested == "auto":
            requested = resolve_mode(requested, last_sweep_at(conn, PSA, endpoint), as_of)
        window = psa_extract.plan_window(
            watermark,
            mode=requested,  # type: ignore[arg-type]
            as_of=as_of,
            overlap=timedelta(minutes=settings.overlap_minutes),
            sweep_days=settings.sweep_days_back,
        )
        result = psa_extract.extract_endpoint(
            conn,
            client,
            endpoint=endpoint,
            run_key=psa_extract.run_key_for(dag_id, run_id, endpoint),
            window=window,
            per_page=settings.per_page,
            progress=progress_logger(endpoint),
        )
        summary[endpoint] = {
            "mode": window.mode,
            "extracted": result.extracted,
            "staged": result.staged,
            "new_versions": result.new_versions,
            "known_versions": result.known_versions,
            "duplicates_in_extract": result.duplicates_in_extract,
            "rows_per_second": round(result.rows_per_second),
        }
    return summary
