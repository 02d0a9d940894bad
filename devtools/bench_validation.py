"""Validation's throughput beside a bare pydantic baseline of the same staged payloads, and how its
cost grows with the month.

Two uses:

- :func:`beside_baseline` is called by ``devtools/bench.py`` right after its validation stage: it
  reads the payloads that stage validated (the same run keys) and validates each with the PSA's
  pydantic model alone (``model_validate_json`` of the staged text: JSON decode + the model, no
  reference data, no SQL). That is the ceiling of "validation" in Python on this machine, now;
  the ratio ``vs_bare_pydantic`` is validation's rows/s over the baseline's.
- ``python -m devtools.bench_validation`` runs validation alone (no posting, no peers) at several
  sizes of one month: the firm is seeded and extracted once at the largest size, then the first
  ``n`` staged versions of each endpoint (by id) form the run validated at each size, canonical
  and the exception queue emptied before each. It prints the rows/s of each size, the baseline
  beside each, the CPU seconds of this process and of the run's PostgreSQL backends (when
  PostgreSQL runs on this machine), and the exponent of seconds ~ records^k fitted over the sizes
  (1.0 = linear), of wall time and of each CPU.

    .venv/bin/python -m devtools.bench_validation                       # 250 consultants x 1, 2, 4
    .venv/bin/python -m devtools.bench_validation --consultants 500 --factors 1 2 4 --profile /tmp/v.prof
    # PSA_ERP_SYNC_DSN=postgresql://... to use a running PostgreSQL instead of the embedded one
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import logging
import math
import os
import platform
import pstats
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from pydantic import BaseModel, ValidationError

from devtools.bench_common import validate_runs

log = logging.getLogger("bench.validation")

#: transactional endpoint -> (validation kind, the PSA model a bare validation uses)
KINDS = {"/v2/time_entries": "time_entry", "/v2/expenses": "expense_entry"}
REFERENCE = ("/v2/projects", "/v2/users", "/v2/task_assignments", "/v2/expense_categories")


def _model(endpoint: str) -> type[BaseModel]:
    from psa_erp_sync.clients import psa_models

    return psa_models.TimeEntry if endpoint == "/v2/time_entries" else psa_models.Expense


def bare_pydantic(conn: psycopg.Connection, run_keys: dict[str, str]) -> dict[str, Any]:
    """Each staged payload of these runs (endpoint -> run key) validated by its pydantic model
    from its JSON text, one call per record; only the validation is timed (each chunk of text is
    read before the clock runs)."""
    records, seconds, invalid = 0, 0.0, 0
    for endpoint, run_key in run_keys.items():
        validate = _model(endpoint).model_validate_json
        with conn.cursor(name="bare_pydantic") as cur:
            cur.execute(
                "SELECT payload::text FROM staging.raw_record"
                " WHERE source_system = 'psa' AND endpoint = %s AND last_run_key = %s",
                (endpoint, run_key),
            )
            while rows := cur.fetchmany(5000):  # streamed: the pipeline's peak RSS stays its own
                texts = [r[0] for r in rows]
                started = time.perf_counter()
                for text in texts:
                    try:
                        validate(text)
                    except ValidationError:
                        invalid += 1
                seconds += time.perf_counter() - started
                records += len(texts)
    return {
        "records": records,
        "seconds": round(seconds, 3),
        "rows_per_s": round(records / max(seconds, 1e-9)),
        "invalid": invalid,
    }


def beside_baseline(
    conn: psycopg.Connection, run_keys: dict[str, str], validate: dict[str, Any]
) -> dict[str, Any]:
    """``validate`` (records, rows_per_s) with the bare baseline of the same runs and the ratio."""
    baseline = bare_pydantic(conn, {e: k for e, k in run_keys.items() if e in KINDS})
    return {
        **validate,
        "bare_pydantic_same_payloads": baseline,
        "vs_bare_pydantic": round(validate["rows_per_s"] / max(baseline["rows_per_s"], 1), 2),
    }


def exponent(points: list[tuple[int, float]]) -> float:
    """k of seconds ~ records^k, least squares over log-log points (1.0 = linear)."""
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(max(s, 1e-9)) for _, s in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else float("nan")


def _reset(conn: psycopg.Connection) -> None:
    """What validation writes, emptied (a bench database only)."""
    conn.execute("TRUNCATE canonical.time_entry, canonical.expense_entry, exceptions.item, audit.change")


def _take(conn: psycopg.Connection, endpoint: str, run_key: str, n: int) -> int:
    """The first ``n`` staged versions of ``endpoint`` (by id) become the run ``run_key``."""
    conn.execute(
        "UPDATE staging.raw_record SET last_run_key = %s WHERE (source_system, endpoint, source_id, payload_hash) IN"
        " (SELECT source_system, endpoint, source_id, payload_hash FROM staging.raw_record"
        "  WHERE source_system = 'psa' AND endpoint = %s ORDER BY length(source_id), source_id LIMIT %s)",
        (run_key, endpoint, n),
    )
    row = conn.execute(
        "SELECT count(*) FROM staging.raw_record WHERE last_run_key = %s", (run_key,)
    ).fetchone()
    return int(row[0]) if row else 0


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a local process (None: not on this machine, or gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BackendCpu:
    """CPU seconds of the PostgreSQL backends of ``conn``'s database while the block runs: the
    run's connection and those it opens (the reader), read from ``/proc`` every 0.2 s by a thread
    with a connection of its own (not counted). A backend's last 0.2 s before it exits may be
    missed. ``seconds`` is None when PostgreSQL is not on this machine (no ``/proc`` entry)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.seconds: float | None = None
        self._conn = conn
        self._stop = threading.Event()
        self._seen: dict[int, tuple[float, float]] = {}  # pid -> (CPU at first sight, latest)

    def _sample(self, monitor: psycopg.Connection) -> bool:
        pids = monitor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        readable = False
        for (pid,) in pids:
            now = _cpu_seconds(pid)
            if now is not None:
                readable = True
                self._seen[pid] = (self._seen.get(pid, (now, now))[0], now)
        return readable

    def _watch(self, monitor: psycopg.Connection) -> None:
        while not self._stop.wait(0.2):
            self._sample(monitor)

    def __enter__(self) -> BackendCpu:
        from psa_erp_sync.ods import connections

        self._monitor = connections.connect_like(self._conn)
        self._monitor.autocommit = True
        self._local = self._sample(self._monitor)  # every backend's CPU before the block
        self._thread = threading.Thread(target=self._watch, args=(self._monitor,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(self._monitor)
        self._monitor.close()
        if self._local:
            self.seconds = round(sum(last - first for first, last in self._seen.values()), 2)


def validate_once(
    conn: psycopg.Connection,
    ref_keys: dict[str, str],
    run_keys: dict[str, str],
    *,
    as_of: datetime,
    profile: cProfile.Profile | None = None,
) -> dict[str, Any]:
    """Validation of these runs as the bench's stage does it (references, then each kind in a
    transaction of its own): records, seconds, rows/s, quarantined."""
    from psa_erp_sync.config import load_config
    from psa_erp_sync.validation import time_expense as validation

    config = load_config()
    with BackendCpu(conn) as backends:
        started, cpu = time.monotonic(), time.process_time()
        if profile is not None:
            profile.enable()
        # the references are built by the first kind's run, beside its reader's sort
        ref = functools.partial(validation.PsaReference.from_staging, conn, ref_keys)
        records, quarantined = validate_runs(conn, ref, run_keys, config=config, as_of=as_of)
        if profile is not None:
            profile.disable()
        seconds = time.monotonic() - started
        client_cpu = time.process_time() - cpu
    return {
        "records": records,
        "seconds": round(seconds, 2),
        "rows_per_s": round(records / seconds),
        "quarantined": quarantined,
        # this process only (PostgreSQL's work is not in it): less sensitive to a loaded machine
        "pipeline_cpu_seconds": round(client_cpu, 2),
        # the run's PostgreSQL backends (None: PostgreSQL not on this machine)
        "postgres_cpu_seconds": backends.seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--consultants", type=int, default=250, help="the base size (factor 1)")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--database", default="psa_erp_sync_bench_validation", help="dropped and recreated")
    parser.add_argument("--port-offset", type=int, default=0, help="move the simulators' ports")
    parser.add_argument("--profile", help="write cProfile stats of the largest size here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("psa_erp_sync.clients.psa").setLevel(logging.WARNING)

    import httpx

    from devtools.bench import PAGE, _in_child, seed_firm
    from devtools.stack import Stack
    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.extract import psa as psa_extract

    today = date(2026, 11, 9)
    as_of = datetime(2026, 11, 9, 12, tzinfo=UTC)
    factors = sorted(set(args.factors))
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "base_consultants": args.consultants,
    }
    with Stack(database=args.database, port_offset=args.port_offset) as stack:
        dsn = stack.start_postgres()
        stack.start_simulators()
        consultants = args.consultants * factors[-1]
        log.info("seeding %d consultants (child process)", consultants)
        result["seed"] = _in_child(seed_firm, consultants, today, stack.url("psa"), stack.url("erp"))
        httpx.put(f"{stack.url('psa')}/admin/config", json={"rate_limit_requests": 0}).raise_for_status()
        psa = HarvestClient(base_url=stack.url("psa"), token="bench", account_id="1")
        window = psa_extract.plan_window(
            None, mode="full", as_of=as_of, overlap=timedelta(hours=1), sweep_days=45
        )
        ref_keys = {endpoint: f"bench/{endpoint}" for endpoint in REFERENCE}
        totals: dict[str, int] = {}
        with psycopg.connect(dsn) as conn:
            for endpoint in (*REFERENCE, *KINDS):
                staged = psa_extract.extract_endpoint(
                    conn, psa, endpoint=endpoint, run_key=f"bench/{endpoint}", window=window, per_page=PAGE
                )
                totals[endpoint] = staged.staged
            conn.commit()
            sizes = []
            for factor in factors:
                run_keys = {endpoint: f"bench-x{factor}/{endpoint}" for endpoint in KINDS}
                for endpoint, run_key in run_keys.items():
                    _take(conn, endpoint, run_key, totals[endpoint] * factor // factors[-1])
                _reset(conn)
                conn.commit()
                conn.autocommit = True
                conn.execute("VACUUM ANALYZE staging.raw_record")
                conn.autocommit = False
                profile = cProfile.Profile() if args.profile and factor == factors[-1] else None
                measured = validate_once(conn, ref_keys, run_keys, as_of=as_of, profile=profile)
                sizes.append({"factor": factor, **beside_baseline(conn, run_keys, measured)})
                log.info("x%d: %s", factor, sizes[-1])
                if profile is not None:
                    profile.dump_stats(args.profile)
                    pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
        result["sizes"] = sizes
        result["seconds_exponent"] = round(exponent([(s["records"], s["seconds"]) for s in sizes]), 2)
        result["pipeline_cpu_seconds_exponent"] = round(
            exponent([(s["records"], s["pipeline_cpu_seconds"]) for s in sizes]), 2
        )
        if all(s["postgres_cpu_seconds"] for s in sizes):
            result["postgres_cpu_seconds_exponent"] = round(
                exponent([(s["records"], s["postgres_cpu_seconds"]) for s in sizes]), 2
            )
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
