"""``make bench``: throughput of each stage of the posting path, printed as JSON.

Measured in one run, on one machine, against baselines measured in the same run (these machines
are shared and noisy; the load average is reported with the figures):

- extract -> stage: end to end from the PSA simulator's HTTP API, then staging alone (the same
  rows, streamed from a spool file through ``COPY`` + dedupe by content hash) against a bare
  ``COPY`` of the same rows into an unindexed table (the ceiling of this PostgreSQL on this
  machine), pandas ``to_sql`` and dlt ``merge`` of the same rows (peers);
- validate: staged versions -> canonical rows or quarantine items;
- post (periods + planner + engine at the configured concurrency and batch size) against a bare
  load generator sending the same number of records straight to the ERP simulator's batch
  endpoint at the same concurrency (the ERP's raw capacity; also measured with each job's result
  read back, which any client of an async batch API must do to learn the outcome);
- billing (``devtools/bench_billing.py``; ``--no-billing`` skips it): the posted time entries ->
  billing events -> invoice documents planned -> posted to the ERP simulator, each step's rows/s,
  ERP requests per invoice, against a bare client sending the same invoice batches in the same run;
- peak RSS of the pipeline process. Seeding and the peers run in child processes (their memory
  is theirs, reported apart), so the figure is that of extract, stage, validate and post.

The ``targets`` section compares each measured value with its target (the table in
``devtools/bench_targets.py``) and says whether it is met.

``--as-of YYYY-MM-DD`` (default today): the firm seeded holds the month of
``simulators.firm.generator.settled_month(as_of)`` and the pipeline runs as of that month's
settled day (the 7th after it), so what is seeded and measured does not depend on the day of the
month.

    python -m devtools.bench                      # ~100k time entries (2,000 consultants)
    python -m devtools.bench --consultants 12500  # the month-end peak (~598k time entries + ~82k expenses)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from datetime import date, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg

from devtools import bench_common
from devtools.bench_common import (
    RunDates,
    add_run_arguments,
    configure_logging,
    configure_simulators,
    machine,
    validate_month,
)
from devtools.bench_targets import evaluate
from devtools.stack import Stack

log = logging.getLogger("bench")

# The endpoints and page size live with the rest of the shared harness; named here as before.
TRANSACTIONAL, REFERENCE, PAGE = bench_common.TRANSACTIONAL, bench_common.REFERENCE, bench_common.PAGE


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_load = bench_common.load_average


def postmaster_pid(dsn: str) -> int | None:
    """The pid of the postmaster serving ``dsn`` when it runs on this machine (the parent of this
    connection's backend, named ``postgres*``), else None (a remote server, or no access)."""
    import psutil

    connected = time.time() - 1.0  # create_time's resolution
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:  # the backend lives while it is open
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            backend = psutil.Process(int(row[0])) if row else None
            # A local process of that pid named postgres* and started by this connection (a server
            # in another pid namespace, or on another host, names a pid that is not its backend here).
            if (
                backend is None
                or not backend.name().startswith("postgres")
                or backend.create_time() < connected
            ):
                return None
            parent = backend.parent()
            if parent is not None:
                parent.cpu_times()  # readable by this user, or the fallback below
    except (psycopg.Error, psutil.Error):
        return None
    if parent is None or not parent.name().startswith("postgres"):
        return None
    return parent.pid


class CpuMeter:
    """CPU seconds used by this process, the ERP simulator and PostgreSQL between ``start`` and
    ``stop``: where the machine's cores went. PostgreSQL is the server at ``dsn`` (its postmaster
    and every process under it, whoever's work they do) when that server runs on this machine;
    otherwise, or without a ``dsn``, every process named ``postgres*`` (on a shared machine that
    counts other servers' work too: other sessions' CI inflated the bare client's figure by up to
    70 %, docs/performance.md, perf-post7)."""

    def __init__(self, erp_pid: int | None, dsn: str | None = None) -> None:
        import psutil

        self._psutil = psutil
        self.erp_pid = erp_pid
        self.postmaster_pid = postmaster_pid(dsn) if dsn else None
        self._t0 = 0.0
        self._c0: dict[str, float] = {}

    def _postgres(self) -> float:
        if self.postmaster_pid is not None:
            return self._server_tree(self.postmaster_pid)
        # Live server processes, plus what the postmaster has reaped from backends that exited
        # (connections closed during the measurement).
        total = 0.0
        for proc in self._psutil.process_iter(["name", "cpu_times", "ppid"]):
            times = proc.info["cpu_times"]
            if not (proc.info["name"] or "").startswith("postgres") or times is None:
                continue
            total += times.user + times.system
            try:
                parent = self._psutil.Process(proc.info["ppid"]).name()
            except self._psutil.Error:
                parent = ""
            if not parent.startswith("postgres"):
                total += times.children_user + times.children_system
        return total

    def _server_tree(self, pid: int) -> float:
        """The postmaster's CPU, what it reaped from children that exited, and its live children's."""
        try:
            root = self._psutil.Process(pid)
            times = root.cpu_times()
            children = root.children(recursive=True)
        except self._psutil.Error:
            return 0.0
        total = times.user + times.system + times.children_user + times.children_system
        for child in children:
            try:
                t = child.cpu_times()
            except self._psutil.Error:
                continue  # exited meanwhile: the postmaster's children_* hold it from now on
            total += t.user + t.system
        return total

    def _snapshot(self) -> dict[str, float]:
        me = self._psutil.Process().cpu_times()
        snap = {"pipeline": me.user + me.system, "postgres": self._postgres()}
        if self.erp_pid is not None:
            try:
                erp = self._psutil.Process(self.erp_pid).cpu_times()
                snap["erp_simulator"] = erp.user + erp.system
            except self._psutil.Error:
                pass
        return snap

    def start(self) -> None:
        self._t0, self._c0 = time.monotonic(), self._snapshot()

    def stop(self) -> dict[str, float]:
        """Cores busy on average, per part (1.0 = one core all the time; the machine has os.cpu_count())."""
        wall = max(time.monotonic() - self._t0, 1e-9)
        now = self._snapshot()
        return {k: round((now[k] - self._c0.get(k, now[k])) / wall, 2) for k in now}


class _Cpu:
    """CPU seconds of this process and of one PostgreSQL backend since it was made: what a stage
    cost besides its wall time, which on a shared machine says more about the load than the code."""

    def __init__(self, backend_pid: int) -> None:
        import psutil

        self._backend = psutil.Process(backend_pid)
        self._client0 = time.process_time()
        self._backend0 = self._backend_seconds()

    def _backend_seconds(self) -> float:
        times = self._backend.cpu_times()
        return times.user + times.system

    def seconds(self) -> dict[str, float]:
        return {
            "client": round(time.process_time() - self._client0, 2),
            "postgres_backend": round(self._backend_seconds() - self._backend0, 2),
        }


def _in_child(fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` in a fresh process (spawned: nothing of ours is inherited)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def seed_firm(consultants: int, today: date, psa_url: str, erp_url: str) -> dict[str, Any]:
    """Generate the firm of the month before ``today`` and push it into the simulators (run in a
    child process). ``today`` is the month's settled day (see ``main``)."""
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    started = time.monotonic()
    firm = generate_firm(
        FirmSpec(seed=5, consultants=consultants, customers=200, projects=600, opportunities=5, today=today)
    )
    counts = load_firm(firm, psa_url=psa_url, erp_url=erp_url, crm_url=None, include_schedule=False)
    return {
        "seconds": round(time.monotonic() - started, 1),
        "time_entries": counts.get("psa.time_entries", 0),
        "expenses": counts.get("psa.expenses", 0),
        "child_peak_rss_mb": round(_rss_mb(), 1),
    }


def bare_erp_capacity(
    erp_url: str,
    records: int,
    concurrency: int,
    batch: int,
    *,
    read_results: bool = False,
    tag: str = "bench",
) -> dict[str, Any]:
    """Synthetic timebills straight to the batch endpoint: the ERP simulator's raw capacity.

    With ``read_results`` each job's result is read as well (one more request per batch), which
    is the least a client must do to learn the outcome of an async batch.
    """
    client = httpx.Client(base_url=erp_url, headers={"Authorization": "Bearer bench"}, timeout=60)
    lock = threading.Lock()
    sent = {"n": 0, "throttled": 0, "requests": 0}

    def one(start: int) -> None:
        items = [
            {
                "externalId": f"{tag}-{i}",
                "tranDate": "2026-11-02",
                "employee": {"externalId": "psa-user-1"},
                "customer": {"externalId": "bench-job"},
                "subsidiary": {"externalId": "LE-US1"},
                "hours": "1.00",
                "rate": "100.00",
                "currency": {"refName": "USD"},
                "isBillable": True,
                "memo": "bench",
            }
            for i in range(start, min(start + batch, records))
        ]
        requests = 0
        for _ in range(50):
            requests += 1
            response = client.post(
                "/services/rest/record/v1/timebill/batch",
                json={"items": items},
                headers={"X-NetSuite-idempotency-key": f"{tag}-{start}"},
            )
            if response.status_code != 429:
                break
            with lock:
                sent["throttled"] += 1
            time.sleep(0.05)
        if read_results and response.status_code == 202:
            job = response.json()["jobId"]
            for _ in range(50):
                requests += 1
                result = client.get(f"/services/rest/async/v1/job/{job}/result")
                if result.status_code != 429:
                    break
                with lock:
                    sent["throttled"] += 1
                time.sleep(0.05)
        with lock:
            sent["n"] += len(items)
            sent["requests"] += requests

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(0, records, batch)))
    seconds = time.monotonic() - started
    client.close()
    return {
        "records": sent["n"],
        "seconds": round(seconds, 2),
        "rows_per_s": round(sent["n"] / seconds),
        "requests": sent["requests"],
        "throttled": sent["throttled"],
    }


def _checkpoint(dsn: str) -> None:
    """A ``CHECKPOINT`` before a timed stage, so the pages the stages before it dirtied are not
    written during it; skipped (logged) where the role may not run one."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege as exc:
        log.warning("no CHECKPOINT before the timed stage: %s", exc)


def same_records_capacity(dsn: str, erp_url: str, record_type: str, concurrency: int) -> dict[str, Any]:
    """The batches the engine sent, sent again straight to the batch endpoint under new external ids
    (so they are inserts, as the engine's were), each job's result read: what the ERP simulator can
    do for exactly this work, without ledger, planning or Python-side payload handling."""
    client = httpx.Client(base_url=erp_url, headers={"Authorization": "Bearer bench"}, timeout=60)
    lock = threading.Lock()
    sent = {"n": 0, "requests": 0}

    def one(batch_key: str, items: list[dict[str, Any]]) -> None:
        requests = 0
        path = f"/services/rest/record/v1/{record_type}/batch"
        for _ in range(50):
            requests += 1
            response = client.post(
                path, json={"items": items}, headers={"X-NetSuite-idempotency-key": batch_key}
            )
            if response.status_code != 429:
                break
            time.sleep(0.05)
        if response.status_code == 202:
            for _ in range(50):
                requests += 1
                result = client.get(f"/services/rest/async/v1/job/{response.json()['jobId']}/result")
                if result.status_code != 429:
                    break
                time.sleep(0.05)
        with lock:
            sent["n"] += len(items)
            sent["requests"] += requests

    def batches() -> Iterator[tuple[str, list[dict[str, Any]]]]:
        # The engine's own batches (by the batch key of their first attempt), streamed.
        with psycopg.connect(dsn) as conn, conn.cursor(name="same_records") as cur:
            cur.itersize = 5000
            cur.execute(
                "SELECT a.batch_key, p.payload::text FROM ledger.posting_full p"
                " JOIN ledger.attempt a ON a.idempotency_key = p.idempotency_key AND a.attempt_no = 1"
                " WHERE p.record_type = %s AND p.action <> 'reverse' AND a.batch_key IS NOT NULL"
                " ORDER BY a.batch_key",
                (record_type,),
            )
            key: str | None = None
            items: list[dict[str, Any]] = []
            for batch_key, text in cur:
                if batch_key != key and items:
                    yield f"same-{key}", items
                    items = []
                key = batch_key
                item = msgspec.json.decode(text)
                item["externalId"] = "same-" + item["externalId"]
                items.append(item)
            if items:
                yield f"same-{key}", items

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        in_flight: set[Any] = set()
        for batch_key, items in batches():
            if len(in_flight) >= 2 * concurrency:
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()
            in_flight.add(pool.submit(one, batch_key, items))
        for future in in_flight:
            future.result()
    seconds = time.monotonic() - started
    client.close()
    return {
        "records": sent["n"],
        "seconds": round(seconds, 2),
        "rows_per_s": round(sent["n"] / seconds),
        "requests": sent["requests"],
    }


def ledger_growth(dsn: str) -> dict[str, Any]:
    """What the posting pass left in the ledger: updates and how many were HOT, size on disk
    (heap, TOAST, indexes) and the time of one per-pass scan by state (the engine's
    ``count_in_state`` shape), read right after posting."""
    time.sleep(1.0)  # the engine's sessions flush their table statistics when they end
    out: dict[str, Any] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("posting", "attempt"):
            rows, upd, hot = conn.execute(
                "SELECT n_live_tup, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
                " WHERE schemaname = 'ledger' AND relname = %s",
                (table,),
            ).fetchone() or (0, 0, 0)
            heap, toast, indexes = conn.execute(
                "SELECT pg_relation_size(c.oid), coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0),"
                " pg_indexes_size(c.oid) FROM pg_class c WHERE c.oid = %s::regclass",
                (f"ledger.{table}",),
            ).fetchone() or (0, 0, 0)
            out[table] = {
                "rows": rows,
                "updates": upd,
                "hot_updates": hot,
                "hot_share": round(hot / max(upd, 1), 3),
                "heap_mb": round(heap / 2**20, 1),
                "toast_mb": round(toast / 2**20, 1),
                "indexes_mb": round(indexes / 2**20, 1),
            }
        scans = []
        for _ in range(3):
            started = time.monotonic()
            conn.execute(
                "SELECT record_type, count(*) FROM ledger.posting WHERE state IN ('sent', 'ambiguous')"
                " GROUP BY record_type"
            ).fetchall()
            scans.append(time.monotonic() - started)
        out["scan_by_state_ms"] = round(min(scans) * 1000, 1)
    return out


def pandas_to_sql(dsn: str, rows: int) -> dict[str, Any]:
    """The same staged payloads loaded by pandas ``to_sql`` (the common DIY baseline); in a child."""
    import pandas as pd
    import sqlalchemy

    with psycopg.connect(dsn) as conn:
        frame = pd.DataFrame(
            conn.execute(
                "SELECT source_id, payload_hash, payload::text AS payload FROM staging.raw_record"
                " WHERE endpoint = '/v2/time_entries' LIMIT %s",
                (rows,),
            ).fetchall(),
            columns=["source_id", "payload_hash", "payload"],
        )
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    url = sqlalchemy.engine.URL.create(
        "postgresql+psycopg",
        username=str(info.get("user") or "postgres"),
        password=info.get("password") or None,  # type: ignore[arg-type]
        host=str(info.get("host") or "127.0.0.1"),
        port=int(info.get("port") or 5432),
        database=str(info.get("dbname")),
    )
    engine = sqlalchemy.create_engine(url)
    started = time.monotonic()
    frame.to_sql(
        "bench_pandas",
        engine,
        schema="staging",
        if_exists="replace",
        index=False,
        chunksize=10_000,
        method="multi",
    )
    seconds = time.monotonic() - started
    engine.dispose()
    return {
        "records": len(frame),
        "seconds": round(seconds, 2),
        "rows_per_s": round(len(frame) / seconds),
        "child_peak_rss_mb": round(_rss_mb(), 1),
    }


def _dlt_in_child(dsn: str, limit: int, workdir: str) -> dict[str, Any]:
    from devtools.bench_peers import dlt_merge

    return dlt_merge(dsn, limit, Path(workdir)) | {"child_peak_rss_mb": round(_rss_mb(), 1)}


def spool(conn: psycopg.Connection, endpoint: str, path: Path) -> int:
    """The staged payloads of ``endpoint`` as JSON lines in a file (streamed, never in memory)."""
    n = 0
    with path.open("wb") as out, conn.cursor(name=f"spool_{abs(hash(endpoint))}") as cur:
        cur.itersize = 5000
        cur.execute("SELECT payload::text FROM staging.raw_record WHERE endpoint = %s", (endpoint,))
        for (text,) in cur:
            out.write(text.encode() + b"\n")
            n += 1
    return n


def spooled_pages(path: Path) -> Iterator[list[msgspec.Raw]]:
    """Pages of ``PAGE`` items from a spool file, as the PSA client hands them over to staging:
    each page split into its items' raw JSON (``HarvestClient.iter_raw_pages``), not decoded."""
    split = msgspec.json.Decoder(list[msgspec.Raw]).decode
    with path.open("rb") as lines:
        page: list[bytes] = []
        for line in lines:
            page.append(line.rstrip(b"\n"))
            if len(page) == PAGE:
                yield split(b"[" + b",".join(page) + b"]")
                page = []
        if page:
            yield split(b"[" + b",".join(page) + b"]")


def stage_spools(conn: psycopg.Connection, spools: dict[str, Path], keys: dict[str, str]) -> int:
    """Each endpoint's spooled rows staged again under its run key, a transaction each, as the
    extract stages them (the same rows as new versions); the versions staged."""
    from psa_erp_sync.ods import staging

    records = 0
    for endpoint, path in spools.items():
        with conn.transaction():
            again = staging.stage_pages(
                conn, spooled_pages(path), run_key=keys[endpoint], source_system="psa", endpoint=endpoint
            )
        records += again.staged
    return records


def bare_copy(conn: psycopg.Connection, path: Path) -> dict[str, Any]:
    """The same rows by a bare ``COPY`` into an unindexed temporary jsonb table: no hash, no dedupe.

    What this PostgreSQL can ingest on this machine at best; staging cannot be faster.
    """
    conn.execute("CREATE TEMP TABLE bench_bare_copy (payload jsonb NOT NULL)")
    n = 0
    started = time.monotonic()
    with (
        conn.cursor() as cur,
        cur.copy("COPY bench_bare_copy (payload) FROM STDIN") as copy,
        path.open("rb") as f,
    ):
        while chunk := f.read(4 << 20):
            if not chunk.endswith(b"\n"):
                chunk += f.readline()
            copy.write(chunk.replace(b"\\", b"\\\\"))
            n += chunk.count(b"\n")
    seconds = time.monotonic() - started
    conn.execute("DROP TABLE bench_bare_copy")
    conn.commit()
    return {"records": n, "seconds": round(seconds, 2), "rows_per_s": round(n / seconds)}


def copy_ceilings(dsn: str, spool_path: str) -> dict[str, Any]:
    """What a bare ``COPY`` of the same payload bytes reaches into simpler tables than staging's,
    as text (no jsonb parsing), the key and hash computed before the clock starts:

    - ``temp_text``: an unindexed temporary table (no WAL, no index: not durable);
    - ``durable_text_keyed``: a logged table keyed by (source id, content hash), the least a
      durable, deduplicating staging table must be.

    Run in a child process: the rows are held in memory so that only the ``COPY`` is timed.
    """
    lines = []
    with Path(spool_path).open("rb") as f:
        for line in f:
            payload = line.rstrip(b"\n")
            source_id = str(msgspec.json.decode(payload, type=_IdOnly).id).encode()
            digest = hashlib.sha256(payload).hexdigest().encode()
            lines.append(source_id + b"\t" + digest + b"\t" + payload.replace(b"\\", b"\\\\") + b"\n")
    data = b"".join(lines)
    del lines
    out: dict[str, Any] = {"records": data.count(b"\n")}
    conn = psycopg.connect(dsn)
    for name, ddl in (
        ("temp_text", "CREATE TEMP TABLE bench_ceiling (source_id text, payload_hash text, payload text)"),
        (
            "durable_text_keyed",
            "CREATE TABLE public.bench_ceiling (source_id text, payload_hash text, payload text,"
            " PRIMARY KEY (source_id, payload_hash))",
        ),
    ):
        conn.execute(ddl)
        conn.commit()
        cpu = _Cpu(conn.info.backend_pid)
        started = time.monotonic()
        with conn.cursor() as cur, cur.copy("COPY bench_ceiling FROM STDIN") as copy:
            for i in range(0, len(data), 4 << 20):
                copy.write(data[i : i + (4 << 20)])
        conn.commit()
        seconds = time.monotonic() - started
        conn.execute("DROP TABLE bench_ceiling")
        conn.commit()
        out[name] = {
            "seconds": round(seconds, 2),
            "rows_per_s": round(out["records"] / seconds),
            "cpu_seconds": cpu.seconds(),
        }
    conn.close()
    return out


class _IdOnly(msgspec.Struct):
    id: int | str


def main(argv: list[str] | None = None) -> int:
    from psa_erp_sync.posting.engine import EngineSettings

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_run_arguments(parser, consultants=2000, database="psa_erp_sync_bench")
    parser.add_argument("--no-peers", action="store_true", help="skip the pandas and dlt peers")
    parser.add_argument(
        "--no-billing", action="store_true", help="skip billing the posted time (devtools/bench_billing.py)"
    )
    parser.add_argument(
        "--workers-per-slot",
        type=int,
        default=EngineSettings.workers_per_slot,
        help="engine threads per ERP slot",
    )
    parser.add_argument(
        "--erp-service-ms",
        type=int,
        default=0,
        help="simulated ERP service time per request (a remote ERP's latency; 0: none)",
    )
    args = parser.parse_args(argv)
    configure_logging()

    from devtools.stack import LOCAL
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.extract import psa as psa_extract
    from psa_erp_sync.posting.service import post_record_type

    dates = RunDates.of(args.as_of)
    today, as_of = dates.today, dates.as_of
    started_all = time.monotonic()
    result: dict[str, Any] = {
        "machine": machine(),
        "as_of": {**dates.describe(args.as_of), "pipeline_as_of": as_of.isoformat()},
        "scale": {
            "consultants": args.consultants,
            "concurrency": args.concurrency,
            "batch": args.batch,
            "erp_service_ms": args.erp_service_ms,
            "workers_per_slot": args.workers_per_slot,
        },
    }
    with (
        Stack(database=args.database, port_offset=args.port_offset) as stack,
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
    ):
        dsn = stack.start_postgres()
        stack.start_simulators()
        log.info("seeding %d consultants (child process)", args.consultants)
        result["seed"] = _in_child(seed_firm, args.consultants, today, stack.url("psa"), stack.url("erp"))
        configure_simulators(stack, concurrency=args.concurrency, erp_service_ms=args.erp_service_ms)
        config = load_config()
        psa = HarvestClient(base_url=stack.url("psa"), token="bench", account_id="1")
        window = psa_extract.plan_window(
            None, mode="full", as_of=as_of, overlap=timedelta(hours=1), sweep_days=45
        )
        keys = {endpoint: f"bench/{endpoint}" for endpoint in (*REFERENCE, *TRANSACTIONAL)}
        spools = {endpoint: Path(tmp) / f"{endpoint.rsplit('/', 1)[-1]}.jsonl" for endpoint in TRANSACTIONAL}
        with psycopg.connect(dsn) as conn:
            for endpoint in REFERENCE:
                psa_extract.extract_endpoint(
                    conn, psa, endpoint=endpoint, run_key=keys[endpoint], window=window, per_page=PAGE
                )
            # 1. extract -> stage, end to end (PSA HTTP API included)
            extracted = {}
            for endpoint in TRANSACTIONAL:
                started = time.monotonic()
                staged = psa_extract.extract_endpoint(
                    conn, psa, endpoint=endpoint, run_key=keys[endpoint], window=window, per_page=PAGE
                )
                extracted[endpoint] = {"records": staged.staged, "seconds": time.monotonic() - started}
            records = sum(e["records"] for e in extracted.values())
            seconds = sum(e["seconds"] for e in extracted.values())
            result["extract_and_stage"] = {
                "records": records,
                "seconds": round(seconds, 2),
                "rows_per_s_end_to_end": round(records / seconds),
                "by_endpoint": {k: v["records"] for k, v in extracted.items()},
                "note": "includes reading the PSA simulator's HTTP API; staging alone is measured below",
            }
            # 2. staging alone: the same rows again, streamed from a spool file, as new versions
            # (as at month end) into the same run keys
            for endpoint, path in spools.items():
                spool(conn, endpoint, path)
            result["bare_copy_same_rows"] = bare_copy(conn, spools["/v2/time_entries"])
            result["copy_ceilings_same_rows"] = _in_child(copy_ceilings, dsn, str(spools["/v2/time_entries"]))
            conn.execute("DELETE FROM staging.raw_record WHERE endpoint = ANY(%s)", (list(TRANSACTIONAL),))
            conn.commit()
            # The DELETE leaves a dead tuple and index entry under every key staged again below,
            # which each insert would probe and the heap would skip: a state no production table is
            # in (time entries and expenses are never deleted from staging) and the ceiling's fresh
            # table is not in either. Not timed.
            conn.autocommit = True
            conn.execute("VACUUM staging.raw_record")
            conn.autocommit = False
            stage_cpu = _Cpu(conn.info.backend_pid)
            started = time.monotonic()
            stage_records = stage_spools(conn, spools, keys)
            stage_seconds = time.monotonic() - started
            result["stage_copy"] = {
                "records": stage_records,
                "seconds": round(stage_seconds, 2),
                "rows_per_s": round(stage_records / stage_seconds),
                "cpu_seconds": stage_cpu.seconds(),
                "note": "COPY + content hash + dedupe into staging.raw_record, from pages split into raw items",
            }
            result["stage_vs_bare_copy"] = round(
                result["stage_copy"]["rows_per_s"] / result["bare_copy_same_rows"]["rows_per_s"], 2
            )
            # 3. validate. Staging's bulk writes settled first, as devtools/bench_validation.py
            # does before its run: their VACUUM ANALYZE (which autovacuum would otherwise start
            # during validation, within its 5 s naptime on the embedded server) and their dirty
            # pages are staging's work, not validation's. Timed and reported, in no stage's figure.
            settle_started = time.monotonic()
            conn.commit()
            conn.autocommit = True
            conn.execute("VACUUM (ANALYZE) staging.raw_record")
            conn.autocommit = False
            _checkpoint(dsn)
            result["settle_before_validate_seconds"] = round(time.monotonic() - settle_started, 2)
            started = time.monotonic()
            checked_total, quarantined = validate_month(conn, keys, config=config, as_of=as_of)
            seconds = time.monotonic() - started
            result["validate"] = {
                "records": checked_total,
                "seconds": round(seconds, 2),
                "rows_per_s": round(checked_total / seconds),
                "quarantined": quarantined,
            }
            from devtools.bench_validation import beside_baseline  # bare pydantic, same payloads, same run

            result["validate"] = beside_baseline(conn, keys, result["validate"])
        result["rss_mb_after_validate"] = round(_rss_mb(), 1)
        # 4. peers, on the same rows in the same PostgreSQL (child processes: their memory is theirs)
        if not args.no_peers:
            time_entries = extracted["/v2/time_entries"]["records"]
            result["pandas_to_sql_same_rows"] = _in_child(pandas_to_sql, dsn, time_entries)
            # dlt is slow enough that a sample of at most 50k rows gives its rate.
            result["dlt_merge_same_rows"] = _in_child(
                _dlt_in_child, dsn, min(time_entries, 50_000), str(LOCAL / "dlt")
            )
            for peer, name in (
                ("dlt_merge_same_rows", "stage_vs_dlt"),
                ("pandas_to_sql_same_rows", "stage_vs_pandas"),
            ):
                result[name] = round(result["stage_copy"]["rows_per_s"] / result[peer]["rows_per_s"], 1)
        # Settle the database before posting: the month's bulk writes (staging, canonical rows, the
        # peers' tables) leave autovacuum a VACUUM ANALYZE of each table and the checkpointer their
        # dirty pages, which otherwise run during whichever stage comes next (measured: up to half a
        # core) and make the posting figure depend on when they happen. The bare client's figures
        # below start from a checkpoint too. Timed and reported; not part of any stage's figure.
        started = time.monotonic()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
        _checkpoint(dsn)
        result["settle_vacuum_analyze_seconds"] = round(time.monotonic() - started, 2)
        # 5. post, then the ERP's raw capacity for the same number of records
        posts: dict[str, Any] = {}
        meter = CpuMeter(stack.pid("erp"), dsn)
        meter.start()
        # The account's limit is the one the ERP simulator was configured with above (no
        # environment file is read: the benchmark is its own environment).
        with NetSuiteClient(
            base_url=stack.url("erp"), account_id="bench", token="bench", concurrency_limit=args.concurrency
        ) as erp:
            for _, (_, record_type) in TRANSACTIONAL.items():
                before = erp.requests_made
                waited_before = erp.request_seconds
                started = time.monotonic()
                posted = post_record_type(
                    dsn=dsn,
                    client=erp,
                    record_type=record_type,
                    config=config,
                    settings=EngineSettings(
                        batch_size=args.batch,
                        max_concurrency=args.concurrency,
                        workers_per_slot=args.workers_per_slot,
                    ),
                    run_id="bench",
                )
                outcome = posted.outcome
                posts[record_type] = {
                    "seconds": time.monotonic() - started,
                    "engine_seconds": outcome["seconds"],
                    "sent": outcome["posted"] + outcome["rejected"],
                    "erp_requests": erp.requests_made - before,
                    "erp_request_seconds": erp.request_seconds - waited_before,
                    "outcome": {k: outcome[k] for k in ("posted", "rejected", "parked", "still_pending")},
                }
        post_cores = meter.stop()
        sent = sum(p["sent"] for p in posts.values())
        seconds = sum(p["seconds"] for p in posts.values())
        engine_seconds = sum(p["engine_seconds"] for p in posts.values())
        requests = sum(p["erp_requests"] for p in posts.values())
        result["post"] = {
            "records_sent": sent,
            "seconds": round(seconds, 2),
            "rows_per_s": round(sent / seconds),
            "engine_seconds": round(engine_seconds, 2),
            "engine_rows_per_s": round(sent / max(engine_seconds, 1e-9)),
            "erp_requests": requests,
            "erp_requests_per_batch": round(requests / max(1, -(-sent // args.batch)), 2),
            "erp_mean_requests_in_flight": round(
                sum(p["erp_request_seconds"] for p in posts.values()) / max(seconds, 1e-9), 1
            ),
            "by_record_type": {
                k: {**v, "seconds": round(v["seconds"], 2), "engine_seconds": round(v["engine_seconds"], 2)}
                for k, v in posts.items()
            },
        }
        httpx.post(
            f"{stack.url('erp')}/admin/seed",
            json={
                "jobs": [
                    {
                        "external_id": "bench-job",
                        "name": "bench",
                        "customer": "psa-client-1",
                        "subsidiary": "LE-US1",
                        "currency": "USD",
                        "billing_type": "time_and_materials",
                        "contract_value": "1.00",
                        "is_inactive": False,
                    }
                ]
            },
        )
        result["post"]["cores_busy"] = post_cores
        result["ledger_growth"] = ledger_growth(dsn)
        _checkpoint(dsn)  # the ledger's pages written by the pass: not on the baselines' time
        meter.start()
        raw = bare_erp_capacity(stack.url("erp"), sent, args.concurrency, args.batch)
        raw["cores_busy"] = meter.stop()
        with_results = bare_erp_capacity(
            stack.url("erp"), sent, args.concurrency, args.batch, read_results=True, tag="bench-r"
        )
        same: dict[str, Any] = {"records": 0, "seconds": 0.0, "requests": 0}
        _checkpoint(dsn)
        meter.start()
        for _, (_, record_type) in TRANSACTIONAL.items():
            one_type = same_records_capacity(dsn, stack.url("erp"), record_type, args.concurrency)
            for k in same:
                same[k] += one_type[k]
        same["cores_busy"] = meter.stop()
        same["rows_per_s"] = round(same["records"] / max(same["seconds"], 1e-9))
        same["seconds"] = round(same["seconds"], 2)
        result["erp_raw_capacity"] = raw
        result["erp_raw_capacity_reading_results"] = with_results
        result["erp_capacity_same_records"] = same
        capacity = max(raw["rows_per_s"], 1)
        result["post_vs_raw_capacity"] = round(result["post"]["rows_per_s"] / capacity, 2)
        # The engine alone (without reading periods and planning), against the same capacity.
        result["engine_vs_raw_capacity"] = round(result["post"]["engine_rows_per_s"] / capacity, 2)
        result["engine_vs_raw_capacity_reading_results"] = round(
            result["post"]["engine_rows_per_s"] / max(with_results["rows_per_s"], 1), 2
        )
        result["engine_vs_capacity_same_records"] = round(
            result["post"]["engine_rows_per_s"] / max(same["rows_per_s"], 1), 2
        )
        # 6. billing: the posted time entries -> events -> invoices -> the ERP, beside the bare
        # client's capacity for the same invoice payloads (devtools/bench_billing.py)
        if not args.no_billing:
            from devtools.bench_billing import measure_billing

            result["billing"] = measure_billing(
                dsn=dsn,
                erp_url=stack.url("erp"),
                erp_pid=stack.pid("erp"),
                concurrency=args.concurrency,
                batch=args.batch,
                workers_per_slot=args.workers_per_slot,
            )
    result["peak_rss_mb"] = round(_rss_mb(), 1)
    result["wall_seconds"] = round(time.monotonic() - started_all, 1)
    result["machine"]["load_average_at_end"] = _load()
    # This benchmark's targets (the others' figures are not in this document: not measured).
    result["targets"] = {row["key"]: row for row in evaluate({"posting": result}) if row["met"] is not None}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
