"""The posting pipeline run once, stage by stage, with each stage's wall time and CPU seconds: what
the scaling check (``devtools/bench_scaling.py``) and the month-end peak (``devtools/bench_peak.py``)
measure.

One firm is seeded into the PSA and ERP simulators (in a child process: its memory is not the
pipeline's), then, in this process and in this order, with nothing else in between:

- **extract**: the PSA simulator's HTTP API -> ``staging.raw_record`` for the transactional
  endpoints (time entries, expenses), end to end (``extract_endpoint``: pages read, staged with
  ``COPY``, content hash and dedupe). The reference endpoints (projects, users, ...) are read first
  and are part of the pipeline's wall time, not of this stage's figure;
- **stage** (``restage=True`` only): the same rows again, streamed from a spool file into the
  same run keys as new versions (staging alone, without the HTTP API), as ``devtools/bench.py``
  measures it; not part of the pipeline's wall time;
- **validate**: staged versions -> canonical rows or quarantine items;
- **post**: periods + planner + engine per record type, to the ERP simulator, every result read;
- **billing** (``billing=True`` only): the posted time -> events -> invoices planned -> posted
  (``devtools/bench_billing.py``'s steps, without its bare-client baseline).

``pipeline.wall_s`` is one clock from the first PSA request to the return of the last posting
pass (which returns when every batch's result has been read: the last ERP confirmation);
``pipeline.last_confirmation_s`` is the same from the ledger (the latest attempt's
``finished_at``, the database's clock), so overlapping stages could not be double counted.

Per stage, ``top_statements_s``: the statements the run's PostgreSQL backends were seen running,
sampled from ``pg_stat_activity`` every 0.2 s (samples x 0.2 s: backend-seconds, roughly; the
simulators' own statements included), to find what grows with the month without
``pg_stat_statements``.

CPU seconds per stage: this process (all its threads), the PostgreSQL backends connected to this
run's database (sampled every 0.2 s by a thread: a backend that exits between two samples loses at
most its last 0.2 s; other engineers' backends on a shared server are not counted), and the ERP
and PSA simulators' processes. The simulators keep their state in the run's database, so their
own backends (the PSA simulator renders every page in SQL) are among the run's backends: they are
told apart by their ``application_name`` (``simulator sim_psa``, ...) and reported apart as well
(``cpu_s.postgres_backends_<name>_simulator``). ``cpu_s_ours`` is the product's cost: this process
and the backends that are not a simulator's; ``cpu_s_simulators`` each simulator's, its process
and its backends (the machine's CPU during the stage, not the product's).
"""

from __future__ import annotations

import logging
import resource
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from devtools.bench_common import PAGE, REFERENCE, TRANSACTIONAL, configure_simulators, validate_month

log = logging.getLogger("bench.pipeline")

SAMPLE_S = 0.2
TOP_STATEMENTS = 6
SIMULATOR_APP = "simulator sim_"  # the application_name prefix of a simulator's connections


def peak_rss_mb() -> float:
    """This process's peak resident set so far (the kernel's high-water mark), in MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def rss_mb() -> float:
    """This process's resident set now, in MB."""
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


class CpuSampler:
    """CPU seconds of this process, of the PostgreSQL backends of one database and of given
    processes (the simulators), cumulated since ``start``; ``read()`` takes a fresh sample.

    The sampler's own cost is not the pipeline's: a sample reads ``/proc`` of every process on the
    machine (~14 ms with 180 processes, every 0.2 s: ~7 % of a core, which grows with a stage's
    wall time, not with its records), so the CPU of the sampling (its thread's, measured with
    ``time.thread_time``, and that of each sample ``read()`` takes) is taken out of ``pipeline``
    and reported as ``sampler``; its connection's backend is not counted among the run's."""

    def __init__(self, *, database: str, pids: dict[str, int | None], dsn: str | None = None) -> None:
        self.database = database
        self.dsn = dsn
        self._statements: dict[str, int] = {}  # statement text -> samples in which a backend ran it
        self._apps: dict[int, str] = {}  # backend pid -> its application_name, as last seen
        self._conn: psycopg.Connection[Any] | None = None
        self.pids = {k: v for k, v in pids.items() if v is not None}
        self._tag = f" {database} "
        self._backends: dict[int, tuple[float, float]] = {}  # pid -> (cpu at first sight, last cpu)
        self._procs: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._own_cpu = 0.0  # CPU seconds spent sampling, since start
        self._own_pid: int | None = None  # the backend of the sampler's connection

    @staticmethod
    def _cpu(times: Any) -> float:
        return float(times.user + times.system)

    def _sample(self) -> None:
        import psutil

        seen: dict[int, float] = {}
        for proc in psutil.process_iter(["name"]):
            if not (proc.info["name"] or "").startswith("postgres") or proc.pid == self._own_pid:
                continue
            with suppress(psutil.Error):
                cmdline = proc.cmdline()
                if cmdline and self._tag in cmdline[0]:
                    seen[proc.pid] = self._cpu(proc.cpu_times())
        procs: dict[str, float] = {"pipeline": self._cpu(psutil.Process().cpu_times())}
        for name, pid in self.pids.items():
            with suppress(psutil.Error):
                procs[name] = self._cpu(psutil.Process(pid).cpu_times())
        with self._lock:
            for pid, cpu in seen.items():
                first = self._backends.get(pid, (cpu if self._thread is None else 0.0, cpu))[0]
                self._backends[pid] = (first, cpu)
            for name, cpu in procs.items():
                self._procs[name] = (self._procs.get(name, (cpu, cpu))[0], cpu)

    def _sample_statements(self) -> None:
        """Which statements the database's other backends are running now (pg_stat_activity):
        counted per sample, ``statements()`` turns the counts into seconds. A statement profile
        without pg_stat_statements, which a shared server may not preload. Also each backend's
        ``application_name``, which tells a simulator's backends from the pipeline's."""
        if self._conn is None:
            return
        try:
            rows = self._conn.execute(
                "SELECT pid, application_name, state = 'active',"
                " left(regexp_replace(query, '\\s+', ' ', 'g'), 160) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        except psycopg.Error:
            return
        with self._lock:
            for pid, app, active, text in rows:
                self._apps[pid] = app or ""
                if active:
                    self._statements[text] = self._statements.get(text, 0) + 1

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            started = time.thread_time()
            self._sample()
            self._sample_statements()
            spent = time.thread_time() - started
            with self._lock:
                self._own_cpu += spent

    def statements(self) -> dict[str, int]:
        """Samples per statement text since ``start`` (each about ``SAMPLE_S`` seconds of a backend)."""
        with self._lock:
            return dict(self._statements)

    def start(self) -> None:
        if self.dsn is not None:
            self._conn = psycopg.connect(self.dsn, autocommit=True)
            self._own_pid = self._conn.info.backend_pid
        self._sample()  # backends alive now count from their present CPU time, later ones from 0
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._conn is not None:
            self._conn.close()

    def read(self) -> dict[str, float]:
        """CPU seconds since ``start``: ``pipeline`` (without the sampling's), ``sampler``,
        ``postgres_backends`` and each named process."""
        started = time.thread_time()
        self._sample()
        spent = time.thread_time() - started
        with self._lock:
            self._own_cpu += spent
            out = {name: last - first for name, (first, last) in self._procs.items()}
            out["sampler"] = self._own_cpu
            out["pipeline"] = out.get("pipeline", 0.0) - self._own_cpu
            out["postgres_backends"] = sum(last - first for first, last in self._backends.values())
            for name in self.pids:
                out[f"postgres_backends_{name}_simulator"] = 0.0
            for pid, (first, last) in self._backends.items():
                app = self._apps.get(pid, "")
                if app.startswith(SIMULATOR_APP):
                    key = f"postgres_backends_{app[len(SIMULATOR_APP) :]}_simulator"
                    out[key] = out.get(key, 0.0) + last - first
        return out


def split_cpu(cpu: dict[str, float], simulators: Iterable[str]) -> tuple[float, dict[str, float]]:
    """(the product's CPU seconds, each simulator's) of a stage's ``cpu_s``: the pipeline process
    and the backends that are not a simulator's; a simulator's process and its backends."""
    sims = {
        name: round(cpu.get(name, 0.0) + cpu.get(f"postgres_backends_{name}_simulator", 0.0), 2)
        for name in simulators
    }
    theirs = sum(v for k, v in cpu.items() if k.startswith("postgres_backends_") and k.endswith("_simulator"))
    return round(cpu["pipeline"] + cpu["postgres_backends"] - theirs, 2), sims


class Stages:
    """Each stage's records, wall seconds, rows/s and CPU seconds (from one :class:`CpuSampler`)."""

    def __init__(self, sampler: CpuSampler) -> None:
        self.sampler = sampler
        self.figures: dict[str, dict[str, Any]] = {}

    @contextmanager
    def measure(self, name: str) -> Iterator[dict[str, Any]]:
        """Times the block; the block sets ``records`` (and any other figure) in the yielded dict."""
        figures: dict[str, Any] = {"records": 0}
        before = self.sampler.read()
        statements_before = self.sampler.statements()
        started = time.monotonic()
        yield figures
        seconds = time.monotonic() - started
        after = self.sampler.read()
        statements = {
            text: n - statements_before.get(text, 0) for text, n in self.sampler.statements().items()
        }
        top = sorted(((n, text) for text, n in statements.items() if n > 0), reverse=True)[:TOP_STATEMENTS]
        figures["top_statements_s"] = {text: round(n * SAMPLE_S, 1) for n, text in top}
        cpu = {k: round(after[k] - before.get(k, 0.0), 2) for k in after}
        figures["seconds"] = round(seconds, 3)
        figures["rows_per_s"] = round(figures["records"] / max(seconds, 1e-9))
        figures["cpu_s"] = cpu
        figures["cpu_s_pipeline_and_backends"] = round(cpu["pipeline"] + cpu["postgres_backends"], 2)
        figures["cpu_s_ours"], figures["cpu_s_simulators"] = split_cpu(cpu, self.sampler.pids)
        figures["rss_mb_after"] = rss_mb()
        figures["peak_rss_mb_after"] = peak_rss_mb()
        self.figures[name] = figures
        log.info("%s: %d records in %.1f s", name, figures["records"], seconds)


def seed(
    stack: Any, consultants: int, today: date, *, concurrency: int, erp_service_ms: int = 0
) -> dict[str, Any]:
    """The firm seeded (child process), the simulators configured as ``devtools/bench.py`` does."""
    from devtools.bench import _in_child, seed_firm

    seeded: dict[str, Any] = _in_child(seed_firm, consultants, today, stack.url("psa"), stack.url("erp"))
    configure_simulators(stack, concurrency=concurrency, erp_service_ms=erp_service_ms)
    return seeded


def run_pipeline(
    stack: Any,
    *,
    as_of: datetime,
    concurrency: int = 15,
    batch: int = 100,
    workers_per_slot: int | None = None,
    restage: bool = False,
    billing: bool = False,
) -> dict[str, Any]:
    """Extract -> (stage) -> validate -> post (-> billing) on a seeded stack; the figures."""
    from devtools.bench import spool, stage_spools
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.extract import psa as psa_extract
    from psa_erp_sync.posting.engine import EngineSettings
    from psa_erp_sync.posting.service import post_record_type

    dsn = stack.dsn
    config = load_config()
    settings = EngineSettings(
        batch_size=batch,
        max_concurrency=concurrency,
        workers_per_slot=workers_per_slot or EngineSettings.workers_per_slot,
    )
    sampler = CpuSampler(
        database=stack.database, pids={"erp": stack.pid("erp"), "psa": stack.pid("psa")}, dsn=dsn
    )
    sampler.start()
    stages = Stages(sampler)
    out: dict[str, Any] = {"rss_mb_before": rss_mb()}
    keys = {endpoint: f"bench/{endpoint}" for endpoint in (*REFERENCE, *TRANSACTIONAL)}
    psa = HarvestClient(base_url=stack.url("psa"), token="bench", account_id="1")
    window = psa_extract.plan_window(
        None, mode="full", as_of=as_of, overlap=timedelta(hours=1), sweep_days=45
    )
    pipeline_started_at = datetime.now(UTC)
    started = time.monotonic()
    restage_seconds = 0.0
    try:
        with psycopg.connect(dsn) as conn, tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
            for endpoint in REFERENCE:
                psa_extract.extract_endpoint(
                    conn, psa, endpoint=endpoint, run_key=keys[endpoint], window=window, per_page=PAGE
                )
            with stages.measure("extract") as fig:
                for endpoint in TRANSACTIONAL:
                    staged = psa_extract.extract_endpoint(
                        conn, psa, endpoint=endpoint, run_key=keys[endpoint], window=window, per_page=PAGE
                    )
                    fig["records"] += staged.staged
            if restage:
                restarted = time.monotonic()
                spools = {e: Path(tmp) / f"{e.rsplit('/', 1)[-1]}.jsonl" for e in TRANSACTIONAL}
                for endpoint, path in spools.items():
                    spool(conn, endpoint, path)
                conn.execute(
                    "DELETE FROM staging.raw_record WHERE endpoint = ANY(%s)", (list(TRANSACTIONAL),)
                )
                conn.commit()
                with stages.measure("stage") as fig:
                    fig["records"] = stage_spools(conn, spools, keys)
                restage_seconds = time.monotonic() - restarted
            with stages.measure("validate") as fig:
                fig["records"], fig["quarantined"] = validate_month(conn, keys, config=config, as_of=as_of)
        with (
            NetSuiteClient(
                base_url=stack.url("erp"), account_id="bench", token="bench", concurrency_limit=concurrency
            ) as erp,
            stages.measure("post") as fig,
        ):
            fig["erp_requests"] = 0
            fig["outcome"] = {}
            for _, (_, record_type) in TRANSACTIONAL.items():
                before = erp.requests_made
                posted = post_record_type(
                    dsn=dsn,
                    client=erp,
                    record_type=record_type,
                    config=config,
                    settings=settings,
                    run_id="bench",
                )
                outcome = posted.outcome
                fig["records"] += int(outcome["posted"]) + int(outcome["rejected"])
                fig["erp_requests"] += erp.requests_made - before
                fig["outcome"][record_type] = {
                    k: outcome[k] for k in ("posted", "rejected", "parked", "still_pending")
                }
        wall = time.monotonic() - started - restage_seconds
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT max(finished_at) FROM ledger.attempt").fetchone()
        last = row[0] if row else None
        out["pipeline"] = {
            "wall_s": round(wall, 2),
            "last_confirmation_s": (
                round((last - pipeline_started_at).total_seconds() - restage_seconds, 2) if last else None
            ),
            "records_extracted": stages.figures["extract"]["records"],
            "records_sent": stages.figures["post"]["records"],
            "peak_rss_mb": peak_rss_mb(),
            "note": "one clock from the first PSA request to the last posting pass's return"
            + (" (the re-staging measurement excluded)" if restage else ""),
        }
        if billing:
            out["billing"] = _billing(stack, stages, config, settings, concurrency)
    finally:
        sampler.stop()
    out["stages"] = stages.figures
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _billing(stack: Any, stages: Stages, config: Any, settings: Any, concurrency: int) -> dict[str, Any]:
    """Billing of the posted time, each step a stage (``billing_events``, ``billing_plan``,
    ``billing_post``; records: billing lines)."""
    from devtools import bench_billing
    from psa_erp_sync.clients.erp import NetSuiteClient

    with stages.measure("billing_events") as fig:
        events = bench_billing.seed_events(stack.dsn)
        fig["records"] = events["events"]
    with NetSuiteClient(
        base_url=stack.url("erp"), account_id="bench", token="bench", concurrency_limit=concurrency
    ) as erp:
        with stages.measure("billing_plan") as fig:
            planned = bench_billing.plan(stack.dsn, erp, config)
            fig["records"] = planned["lines"]
            fig["documents"] = planned["documents"]
        with stages.measure("billing_post") as fig:
            posted = bench_billing.post(stack.dsn, erp, config, settings, planned["lines"])
            fig["records"] = planned["lines"]
            fig["documents"] = posted["documents_sent"]
    return {"events": events["events"], "documents": planned["documents"], "outcome": posted["outcome"]}
