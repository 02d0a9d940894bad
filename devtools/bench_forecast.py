"""Forecast refresh benchmark: 50,000 projects x 12 months, target in ``devtools/bench_targets.py``.

Synthetic inputs in the model's shapes (a mix of T&M, fixed fee, milestone and retainer
projects, three people planned on each for 12 months, a year of actuals, an open pipeline) are
generated first (not timed) and, with a database, seeded into the ODS tables the refresh reads
(``devtools/bench_forecast_seed.py``, not timed); then the refresh is timed: its inputs read back
(data versions and ``forecast.inputs.load_inputs``), the three scenarios computed by the
vectorised model and durably written as immutable snapshots (binary COPY, one committed transaction per
snapshot). A refresh is only done when its snapshots are stored, so the figure compared with the
target includes the write; compute-only and write-only are reported too, and a re-run on the same
inputs must write nothing.

    python -m devtools.bench_forecast                  # fresh database on the embedded PostgreSQL
    python -m devtools.bench_forecast --dsn postgresql://...  # that (migrated) database
    python -m devtools.bench_forecast --compute-only   # no database: "met" is false
    python -m devtools.bench_forecast --as-of 2027-02-28  # the forecast as of that date (default today)

``run(...)`` returns the figures as a dict (``make bench`` merges it into its JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from datetime import UTC, date, datetime
from typing import Any

from devtools.bench_targets import add_as_of, threshold

TARGET_SECONDS = threshold("forecast_refresh_s")


def synthetic_inputs(projects: int, months: int, as_of: date, seed: int = 1) -> Any:
    """Model inputs for ``projects`` projects planned over ``months`` months (vectorised)."""
    import numpy as np
    import pandas as pd

    from psa_erp_sync.forecast import model

    rng = np.random.default_rng(seed)
    m0 = model.month_index(as_of)
    refs = np.array([f"p{i}" for i in range(projects)], dtype=object)
    kinds = rng.choice(
        ["time_and_materials", "fixed_fee", "milestone", "retainer"], projects, p=[0.45, 0.25, 0.15, 0.15]
    )
    entities = rng.choice(["LE-US1", "LE-US2", "LE-UK1"], projects)
    currency = np.where(entities == "LE-UK1", "GBP", "USD")
    practices = rng.choice(
        ["Strategy", "Technology", "Finance Transformation", "Data & Analytics", "Operations"], projects
    )
    start = m0 - rng.integers(1, 18, projects)
    end = m0 + rng.integers(1, months + 6, projects)
    rate = rng.integers(150, 300, projects) * 100
    price = rng.integers(50, 2_000, projects) * 100_000
    project_frame = pd.DataFrame(
        {
            "project_ref": refs,
            "practice": practices,
            "legal_entity": entities,
            "currency": currency,
            "billing_type": kinds,
            "price_minor": price,
            "bill_rate_minor": rate,
            "start_month": start,
            "end_month": end,
            "billed_minor": 0,
        }
    ).astype(model.PROJECT_COLUMNS)
    people = 3
    rows = projects * people * months
    sched_ref = np.repeat(refs, people * months)
    user = np.repeat(rng.integers(0, max(1, projects // 3), projects * people), months)
    month = np.tile(np.arange(m0, m0 + months), projects * people)
    schedule = pd.DataFrame(
        {
            "project_ref": sched_ref,
            "user_ref": np.char.add("u", user.astype(str)).astype(object),
            "month": month,
            "hours_centi": rng.integers(0, 8_000, rows),
            "cost_rate_minor": np.repeat(rate * 45 // 100, people * months),
            "cost_currency": np.repeat(currency, people * months),
        }
    ).astype(model.SCHEDULE_COLUMNS)
    hist = np.arange(m0 - 12, m0)
    actuals = pd.DataFrame(
        {
            "project_ref": np.repeat(refs, 12),
            "month": np.tile(hist, projects),
            "revenue_minor": rng.integers(0, 3_000_000, projects * 12),
            "cost_minor": rng.integers(0, 1_500_000, projects * 12),
        }
    ).astype(model.ACTUAL_COLUMNS)
    users = np.unique(schedule["user_ref"].to_numpy())
    capacity = pd.DataFrame(
        {
            "user_ref": np.repeat(users, months),
            "month": np.tile(np.arange(m0, m0 + months), len(users)),
            "available_centi": 16_000,
        }
    ).astype(model.CAPACITY_COLUMNS)
    ms_refs = refs[kinds == "milestone"]
    milestones = pd.DataFrame(
        {
            "project_ref": np.repeat(ms_refs, 4),
            "amount_minor": 2_500_000,
            "status": np.tile(["signed_off", "completed", "planned", "planned"], len(ms_refs)),
            "due_month": np.tile([m0 - 2, m0 - 1, m0 + 1, m0 + 4], len(ms_refs)),
            "done_month": np.tile([m0 - 2, m0 - 1, -1, -1], len(ms_refs)),
        }
    ).astype(model.MILESTONE_COLUMNS)
    n_opps = projects // 5
    opportunities = pd.DataFrame(
        {
            "opp_ref": [f"opp-{i}" for i in range(n_opps)],
            "practice": rng.choice(practices, n_opps),
            "legal_entity": rng.choice(["LE-US1", "LE-US2"], n_opps),
            "currency": "USD",
            "stage": rng.choice(["Prospecting", "Qualification", "Proposal", "Negotiation"], n_opps),
            "amount_minor": rng.integers(10, 500, n_opps) * 1_000_000,
            "start_month": m0 + rng.integers(1, 9, n_opps),
            "duration_months": rng.integers(3, 13, n_opps),
        }
    ).astype(model.OPPORTUNITY_COLUMNS)
    return model.ForecastInputs(as_of, project_frame, actuals, schedule, capacity, milestones, opportunities)


def _backend_cpu_s(conn: Any) -> float | None:
    """CPU seconds (user + system) of ``conn``'s PostgreSQL backend so far, when it runs on this
    machine (``/proc``); None otherwise. Unlike wall time, it hardly moves with the load."""
    try:
        with open(f"/proc/{conn.info.backend_pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _read_inputs(
    dsn: str, as_of: date, settings: Any, versions: dict[str, str]
) -> tuple[Any, dict[str, Any]]:
    """The refresh's reads, timed: the data versions and ``load_inputs`` from the seeded ODS
    (``versions`` gains the ODS's). Returns the inputs read and the phase's figures."""
    import psycopg

    from psa_erp_sync.forecast import inputs as forecast_inputs

    # The schedule and the side reads may run on connections of their own
    # (``inputs._reads_aside``): each such backend's CPU (from its start) is added to the phase's
    # PostgreSQL CPU.
    aside: list[tuple[int, float | None]] = []
    originals = {name: getattr(forecast_inputs, name) for name in ("_schedule_read", "_side_reads")}

    def timed(read: Any) -> Any:
        def run(conn: Any, *args: Any) -> Any:
            result = read(conn, *args)
            # A connection aside is opened for this read: its backend's CPU since it started.
            aside.append((conn.info.backend_pid, _backend_cpu_s(conn)))
            return result

        return run

    for name, read in originals.items():
        setattr(forecast_inputs, name, timed(read))
    try:
        with psycopg.connect(dsn) as conn:
            main_pid = conn.info.backend_pid
            server0 = _backend_cpu_s(conn)
            c0 = time.process_time()
            w0 = time.perf_counter()
            versions.update(forecast_inputs.data_versions(conn, settings))
            loaded = forecast_inputs.load_inputs(conn, as_of=as_of, settings=settings, prior_snapshot_id=None)
            wall = time.perf_counter() - w0
            cpu = time.process_time() - c0
            server1 = _backend_cpu_s(conn)
            conn.commit()  # as the refresh does: the actuals caught up stay caught up
    finally:
        for name, read in originals.items():
            setattr(forecast_inputs, name, read)
    server = server1 - server0 if server0 is not None and server1 is not None else None
    for pid, cpu_s in aside:
        if server is not None and pid != main_pid:
            server = server + cpu_s if cpu_s is not None else None
    return loaded, {
        "read_inputs_s": round(wall, 2),
        "read_client_cpu_s": round(cpu, 2),
        "read_server_cpu_s": round(server, 2) if server is not None else None,
        "read_rows": {
            "projects": len(loaded.projects),
            "schedule": len(loaded.schedule),
            "actuals": len(loaded.actuals),
            "capacity": len(loaded.capacity),
            "milestones": len(loaded.milestones),
            "opportunities": len(loaded.opportunities),
        },
    }


def _compute_and_write(
    conn: Any, inputs: Any, settings: Any, snap_ids: dict[str, str], versions: dict[str, str]
) -> tuple[list[Any], dict[str, Any]]:
    """The three scenarios computed and written as the refresh does (``store.write_as_computed``:
    each written by a writer thread while the next is computed), timed: the wall time of both,
    and each thread's own time and CPU (compute on this thread, the write on the writer's), the
    write's PostgreSQL CPU. Returns the results and the figures."""
    from psa_erp_sync.forecast import model, store
    from psa_erp_sync.forecast.settings import SCENARIOS

    spent = {"compute_s": 0.0, "compute_cpu_s": 0.0, "write_s": 0.0, "write_client_cpu_s": 0.0}
    results: list[Any] = []

    def computed() -> Any:
        scenarios = model.iter_scenarios(inputs, settings, SCENARIOS)
        while True:
            w, c = time.perf_counter(), time.thread_time()
            result = next(scenarios, None)
            spent["compute_s"] += time.perf_counter() - w
            spent["compute_cpu_s"] += time.thread_time() - c
            if result is None:
                return
            results.append(result)
            yield result

    write_snapshot = store.write_snapshot

    def timed_write(*args: Any, **kwargs: Any) -> bool:
        w, c = time.perf_counter(), time.thread_time()
        try:
            return write_snapshot(*args, **kwargs)
        finally:
            spent["write_s"] += time.perf_counter() - w
            spent["write_client_cpu_s"] += time.thread_time() - c

    server0 = _backend_cpu_s(conn)
    w0, p0 = time.perf_counter(), time.process_time()
    store.write_snapshot = timed_write
    try:
        written = store.write_as_computed(
            conn,
            computed(),
            snap_ids=snap_ids,
            run_id="bench",
            data_versions=versions,
            reporting_currency=settings.reporting_currency,
        )
    finally:
        store.write_snapshot = write_snapshot
    wall, cpu = time.perf_counter() - w0, time.process_time() - p0
    server1 = _backend_cpu_s(conn)
    return results, {
        "written": [written[s] for s in SCENARIOS],
        "compute_and_write_s": round(wall, 2),
        # Every thread of this process (the COPY's sending threads too): compute + the write's client.
        "compute_and_write_cpu_s": round(cpu, 2),
        **{k: round(v, 2) for k, v in spent.items()},
        "write_server_cpu_s": server1 - server0 if server0 is not None and server1 is not None else None,
    }


def run(
    projects: int = 50_000,
    months: int = 12,
    dsn: str | None = None,
    *,
    parallel: bool = False,
    as_of: date | None = None,
) -> dict[str, Any]:
    """Time a refresh of ``projects`` x ``months``: the three scenarios computed and, with ``dsn``
    (a migrated ODS), durably written as snapshots. The refresh figure is the wall time of both in
    one run; compute-only and write-only are reported next to it. Without ``dsn`` the refresh is
    not complete (nothing stored), so ``met`` is False."""
    import psycopg

    from psa_erp_sync.forecast import model, store
    from psa_erp_sync.forecast.settings import SCENARIOS, load_forecast_settings

    settings = load_forecast_settings()
    if months > settings.horizon_months:
        raise ValueError(f"months must be at most the configured horizon ({settings.horizon_months})")
    as_of = as_of or datetime.now(UTC).date()
    started = time.perf_counter()
    inputs = synthetic_inputs(projects, months, as_of)
    generate_s = time.perf_counter() - started
    versions = {"bench": f"{projects}x{months}:{time.time_ns()}"}
    seeded: dict[str, Any] | None = None
    if dsn is not None:
        from devtools.bench_forecast_seed import seed_ods

        seeded = seed_ods(dsn, inputs)
    write_s: float | None = None
    rerun_s: float | None = None
    written: list[bool] = []
    series_rows: int | None = None
    capacity_series_rows: int | None = None
    balance_rows: int | None = None
    write_cpu_s: float | None = None
    server_cpu_s: float | None = None
    t0 = time.perf_counter()
    reads: dict[str, Any] = {}
    if dsn is not None:
        inputs, reads = _read_inputs(dsn, as_of, settings, versions)
    snap_ids = {s: store.snapshot_id(s, as_of, versions) for s in SCENARIOS}
    overlap: dict[str, Any] = {}
    if dsn is None or parallel:
        c0 = time.process_time()
        tc = time.perf_counter()
        results = model.compute_scenarios(inputs, settings, SCENARIOS)
        compute_s = time.perf_counter() - tc
        compute_cpu_s = time.process_time() - c0
    if dsn is not None and parallel:
        with psycopg.connect(dsn) as conn:
            server0 = _backend_cpu_s(conn)
            c0 = time.process_time()
            w0 = time.perf_counter()
            written = list(
                store.write_snapshots(
                    conn,
                    results,
                    snap_ids=snap_ids,
                    run_id="bench",
                    data_versions=versions,
                    reporting_currency=settings.reporting_currency,
                    parallel=parallel,
                ).values()
            )
            write_s = time.perf_counter() - w0
            write_cpu_s = time.process_time() - c0
            server1 = _backend_cpu_s(conn)
            if server0 is not None and server1 is not None:
                server_cpu_s = server1 - server0
    elif dsn is not None:
        with psycopg.connect(dsn) as conn:
            results, overlap = _compute_and_write(conn, inputs, settings, snap_ids, versions)
        written = overlap.pop("written")
        compute_s, compute_cpu_s = overlap.pop("compute_s"), overlap.pop("compute_cpu_s")
        write_s, write_cpu_s = overlap.pop("write_s"), overlap.pop("write_client_cpu_s")
        server_cpu_s = overlap.pop("write_server_cpu_s")
    refresh_s = time.perf_counter() - t0
    if dsn is not None:
        with psycopg.connect(dsn) as conn:
            # Idempotency: the same scenario, as-of and data versions write nothing.
            r0 = time.perf_counter()
            again = store.write_snapshots(
                conn,
                results,
                snap_ids=snap_ids,
                run_id="bench-again",
                data_versions=versions,
                reporting_currency=settings.reporting_currency,
                parallel=parallel,
            ).values()
            rerun_s = time.perf_counter() - r0
            if any(again):
                raise RuntimeError("re-running the refresh on unchanged inputs wrote a snapshot")
            ids = list(snap_ids.values())
            row = conn.execute(
                "SELECT count(*) FROM forecast.line_series WHERE snapshot_id = ANY(%s)", (ids,)
            ).fetchone()
            series_rows = int(row[0]) if row else 0
            row = conn.execute(
                "SELECT count(*) FROM forecast.capacity_series WHERE snapshot_id = ANY(%s)", (ids,)
            ).fetchone()
            capacity_series_rows = int(row[0]) if row else 0
            row = conn.execute(
                "SELECT count(*) FROM forecast.contract_balance_row WHERE snapshot_id = ANY(%s)", (ids,)
            ).fetchone()
            balance_rows = int(row[0]) if row else 0
    s0 = time.perf_counter()
    model.compute(inputs, settings, "base")
    compute_base_s = time.perf_counter() - s0
    return {
        "forecast_refresh": {
            "as_of": as_of.isoformat(),
            "projects": projects,
            "months": months,
            "schedule_rows": len(inputs.schedule),
            "actual_rows": len(inputs.actuals),
            "opportunities": len(inputs.opportunities),
            "lines_per_scenario": [len(r.lines) for r in results],
            "line_series_rows_3_scenarios": series_rows,
            "capacity_rows_per_scenario": [len(r.capacity) for r in results],
            "capacity_series_rows_3_scenarios": capacity_series_rows,
            "contract_balance_rows_3_scenarios": balance_rows,
            "engine": "pandas/numpy int64 (DuckDB and polars not installed; not measured)",
            "storage": (
                "forecast.line_series (bigint[] per snapshot x project x layer) and forecast.capacity_series "
                "(per snapshot x person), binary COPY built with numpy, one transaction per snapshot"
            ),
            "generate_inputs_s": round(generate_s, 2),
            # With a database the inputs are seeded into the ODS (not timed) and the refresh reads
            # them back (timed, part of refresh_s): data versions + forecast.inputs.load_inputs.
            "seeded_rows": seeded,
            **reads,
            "compute_base_only_s": round(compute_base_s, 2),
            "compute_3_scenarios_s": round(compute_s, 2),
            "write_3_snapshots_s": round(write_s, 2) if write_s is not None else None,
            # CPU seconds per phase (this process; the PostgreSQL backend of the write): what the
            # refresh costs whatever the load; wall time on a busy shared machine is a multiple.
            "compute_cpu_s": round(compute_cpu_s, 2),
            "write_client_cpu_s": round(write_cpu_s, 2) if write_cpu_s is not None else None,
            "write_server_cpu_s": round(server_cpu_s, 2) if server_cpu_s is not None else None,
            # Without --parallel-writes the refresh writes each scenario while the next is computed
            # (store.write_as_computed): compute and write above are each phase's own time
            # (main thread; writer thread), overlapping; this is the wall time of both together.
            **overlap,
            "rerun_unchanged_s": round(rerun_s, 2) if rerun_s is not None else None,
            "written": written,
            "parallel_writes": parallel,
            "refresh_s": round(refresh_s, 2),
            "target_s": TARGET_SECONDS,
            "includes_db_write": write_s is not None,
            "met": write_s is not None and all(written) and refresh_s <= TARGET_SECONDS,
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        }
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--projects", type=int, default=50_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--dsn", help="write the snapshots to this (migrated) ODS database")
    parser.add_argument(
        "--compute-only", action="store_true", help="no database: time the model only (target not met)"
    )
    parser.add_argument(
        "--parallel-writes",
        action="store_true",
        help="write the scenarios' snapshots on parallel connections",
    )
    add_as_of(parser)
    args = parser.parse_args(argv)
    parallel = args.parallel_writes
    if args.compute_only:
        result = run(args.projects, args.months, None, parallel=parallel, as_of=args.as_of)
    elif args.dsn:
        result = run(args.projects, args.months, args.dsn, parallel=parallel, as_of=args.as_of)
    else:
        from devtools.stack import Stack

        with Stack(database="psa_erp_sync_bench_forecast", fresh=True) as stack:
            result = run(
                args.projects, args.months, stack.start_postgres(), parallel=parallel, as_of=args.as_of
            )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
