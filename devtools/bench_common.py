"""What the pipeline benchmarks share (``devtools/bench.py``, ``bench_pipeline.py``, ``bench_peak.py``,
``bench_scaling.py``): their common command-line options, logging, the machine's description, the
as-of dates of a seeded month, the simulators' configuration for a run, and the validation step
(staged versions of each transactional endpoint -> canonical rows or quarantine items).

One copy of each, so the benchmarks cannot drift apart in what they accept or how they validate.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import psycopg

from devtools.bench_targets import add_as_of

#: The transactional endpoints: validation kind and ERP record type.
TRANSACTIONAL = {
    "/v2/time_entries": ("time_entry", "timebill"),
    "/v2/expenses": ("expense_entry", "expensereport"),
}
#: The reference endpoints validation reads its references from, extracted before the month.
REFERENCE = ("/v2/projects", "/v2/users", "/v2/task_assignments", "/v2/expense_categories")
PAGE = 2000


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def add_run_arguments(
    parser: argparse.ArgumentParser,
    *,
    consultants: int | None,
    database: str,
    database_help: str = "dropped and recreated",
) -> None:
    """``--consultants`` (when given a default), ``--concurrency``, ``--batch``, ``--database``,
    ``--port-offset`` and ``--as-of``: the options every pipeline benchmark takes."""
    if consultants is not None:
        parser.add_argument("--consultants", type=int, default=consultants)
    parser.add_argument("--concurrency", type=int, default=15)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--database", default=database, help=database_help)
    parser.add_argument(
        "--port-offset", type=int, default=0, help="move the simulators' ports (another stack runs)"
    )
    add_as_of(parser)


def configure_logging() -> None:
    """INFO to stderr (stdout holds the JSON), without a line per HTTP request or PSA page."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("psa_erp_sync.clients.psa").setLevel(logging.WARNING)


def machine() -> dict[str, Any]:
    """Cores, Python, platform and the load average now (``load_average_at_start``)."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": load_average(),
    }


@dataclass(frozen=True)
class RunDates:
    """The month a benchmark seeds for an as-of day, the day the firm is generated as of (the
    month's settled day), and the pipeline's as-of (noon of that day, UTC)."""

    month: date
    today: date
    as_of: datetime

    @classmethod
    def of(cls, as_of_day: date) -> RunDates:
        from simulators.firm.generator import FirmSpec, resolve_dates, settled_month

        month = settled_month(as_of_day)
        today, _, _ = resolve_dates(FirmSpec(month=month))
        return cls(month, today, datetime(today.year, today.month, today.day, 12, tzinfo=UTC))

    def describe(self, requested: date) -> dict[str, str]:
        """The ``as_of`` section of a benchmark's JSON."""
        return {"requested": requested.isoformat(), "seeded_month": self.month.isoformat()[:7]}


def configure_simulators(stack: Any, *, concurrency: int, erp_service_ms: int = 0) -> None:
    """The PSA without its rate limit (the benchmark reads as fast as it can), the ERP account's
    concurrency limit and its simulated service time."""
    import httpx

    httpx.put(f"{stack.url('psa')}/admin/config", json={"rate_limit_requests": 0}).raise_for_status()
    httpx.put(
        f"{stack.url('erp')}/admin/config",
        json={"concurrency_limit": concurrency, "service_time_ms": erp_service_ms},
    ).raise_for_status()


def validate_month(
    conn: psycopg.Connection, keys: dict[str, str], *, config: Any, as_of: datetime
) -> tuple[int, int]:
    """Validation as the pipeline runs it: the references read from staging (``keys``: endpoint ->
    run key), then each transactional endpoint's staged versions in a transaction of its own.
    (versions checked, quarantined)."""
    from psa_erp_sync.validation import time_expense as validation

    runs = {endpoint: keys[endpoint] for endpoint in TRANSACTIONAL}
    return validate_runs(
        conn, lambda: validation.PsaReference.from_staging(conn, keys), runs, config=config, as_of=as_of
    )


def validate_runs(
    conn: psycopg.Connection, ref: Any, runs: dict[str, str], *, config: Any, as_of: datetime
) -> tuple[int, int]:
    """Each transactional endpoint's staged versions of ``runs`` (endpoint -> run key) validated
    against ``ref``, in a transaction of its own, in turn. (versions checked, quarantined).

    ``ref`` is the reference or a function that builds it: then built once, by the first run, while
    its reader sorts (``validate_run``). Each next kind's key sort and first batch start before the
    kind ahead of it is judged (``staged_read``: staging only, in a snapshot of its own), so a kind
    does not wait for its sort after the one before it commits: the DAG runs the kinds as two tasks
    at once."""
    from psa_erp_sync.validation import time_expense as validation

    built: list[Any] = []

    def reference() -> Any:
        if not built:
            built.append(ref() if callable(ref) else ref)
        return built[0]

    checked_total, quarantined = 0, 0
    order = list(runs.items())
    with contextlib.ExitStack() as reads:
        ahead = None
        for at, (endpoint, run_key) in enumerate(order):
            staged, ahead = ahead, None
            if at + 1 < len(order):
                kind, key = TRANSACTIONAL[order[at + 1][0]][0], order[at + 1][1]
                ahead = reads.enter_context(validation.staged_read(conn, kind, key))  # type: ignore[arg-type]
            with conn.transaction():
                checked = validation.validate_run(
                    conn,
                    kind=TRANSACTIONAL[endpoint][0],  # type: ignore[arg-type]
                    run_key=run_key,
                    ref=reference if not built else built[0],
                    config=config,
                    as_of=as_of,
                    dag_run_id="bench",
                    staged=staged,
                )
            checked_total += checked.staged_versions
            quarantined += checked.quarantined
    return checked_total, quarantined
