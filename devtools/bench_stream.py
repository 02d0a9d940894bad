"""Stream latency benchmark: webhook accepted -> ERP posting confirmed, through real Airflow.

Starts PostgreSQL (embedded), the simulators, an Airflow metadata DB on the same server, and the
Airflow components as **separate processes**: ``api-server`` (which serves the webhook ingress
plugin), ``scheduler`` (LocalExecutor), ``triggerer`` (runs the inbox ``AssetWatcher``) and
``dag-processor``. The PSA simulator is subscribed to the ingress; the benchmark approves time
entries one at a time at a Poisson rate, the PSA signs and delivers its webhooks, and every
approval travels ingress -> inbox -> trigger -> asset event -> DAG run -> task -> ERP.

Per event: ``received`` (inbox row committed) -> ``detected`` (the asset event whose payload
covers the event's inbox seq) -> ``run queued`` (the run that claimed it) -> ``task start`` ->
``confirmed`` (the ERP posting's confirming ledger attempt). Stages are clamped at 0 where an
event rode a run that was already on its way. The ingress itself is measured separately with
direct signed POSTs to the API server. The load average is recorded next to the figures.

``--as-of YYYY-MM-DD`` (default today): the firm seeded holds the month of
``simulators.firm.generator.settled_month(as_of)``. How many of its time entries are still
unapproved depends on that month's calendar (4.4 to 5.1 per consultant), so the number of
consultants is sized from ``--events`` (``consultants_for``) unless given: with a fixed 130 the
benchmark ran on months with 608 unapproved entries and failed on those with 573.

``--with-batch`` (consumer path): after the warm-up the month is validated, then batch posting
passes of it run back to back (``devtools/bench_stream_batch.py``: each re-posts the month, so a
pass is always working the posting lock) until the last approval; 600 approvals by default, so
that >= 500 arrive while a pass runs. The webhooks received while a pass ran are measured apart
(``during_batch_pass``, the issue's "p95 <= 3 s with a batch posting pass running");
``--no-hand-off`` makes the passes keep the lock for their whole pass (the behaviour before the
hand-off), ``--batch-concurrency`` lowers their ERP requests in flight (and connections).

    python -m devtools.bench_stream                    # 500 events at 2/s
    python -m devtools.bench_stream --events 100 --rate 1
    python -m devtools.bench_stream --with-batch --port-offset 1500 --database strm_bench
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import itertools
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from devtools.airflow_env import airflow_env, psycopg_parts
from devtools.bench_targets import add_as_of, threshold
from devtools.stack import LOCAL, ROOT, Stack

log = logging.getLogger("bench-stream")

GOAL_P95_S = threshold("stream_p95_s")
GOAL_P99_S = threshold("stream_p99_s")
# Fewest unapproved time entries per consultant of any month 2026-2028 (4.4), with a margin.
PENDING_PER_CONSULTANT = 4.0
COMPONENTS = ("api-server", "scheduler", "triggerer", "dag-processor")
DAG_ID = "time_expense_stream"
WEBHOOK_SECRET = "bench-stream-webhook-secret"  # noqa: S105 (a throwaway secret of a throwaway local stack)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[k], 3)


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": _pct(values, 50),
        "p95": _pct(values, 95),
        "p99": _pct(values, 99),
        "max": round(max(values), 3) if values else None,
    }


def _sign(timestamp: str, body: bytes) -> str:
    return (
        "sha256="
        + hmac.new(WEBHOOK_SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )


class Airflow:
    """The four Airflow components as separate processes against a PostgreSQL metadata DB."""

    def __init__(self, stack: Stack, *, port: int) -> None:
        self.stack = stack
        self.port = port
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.home = LOCAL / "airflow-bench-stream"
        self.dags = Path(tempfile.mkdtemp(prefix="bench-stream-dags-"))
        (self.dags / f"{DAG_ID}.py").symlink_to(ROOT / "dags" / f"{DAG_ID}.py")
        self.meta_db = "airflow_bench_stream"
        with psycopg.connect(stack.server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.meta_db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.meta_db}"')
        parts = psycopg_parts(stack.server_dsn)
        self.meta_dsn = psycopg.conninfo.make_conninfo(stack.server_dsn, dbname=self.meta_db)
        env = airflow_env(stack, home=self.home, lineage_file=LOCAL / "openlineage" / "bench-stream.jsonl")
        env.update(
            {
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                    f"postgresql+psycopg2://{parts['login']}:{parts['password']}@{parts['host']}:{parts['port']}/{self.meta_db}"
                ),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW_CONN_PSA_WEBHOOK": json.dumps({"conn_type": "generic", "password": WEBHOOK_SECRET}),
            }
        )
        bin_dir = Path(sys.executable).parent
        self.env = {**os.environ, **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.airflow = str(bin_dir / "airflow")

    def migrate(self) -> float:
        started = time.monotonic()
        out = self.stack.logs / "bench-stream-db-migrate.log"
        with out.open("wb") as fh:
            subprocess.run(
                [self.airflow, "db", "migrate"],
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                check=True,
                timeout=600,
            )
            # The posting tasks run in their ERP account's pool (docs/posting.md); without it the
            # scheduler never schedules them. Two slots, as compose and make airflow create it.
            from psa_erp_sync.hooks.erp import account_pool

            subprocess.run(
                [self.airflow, "pools", "set", account_pool(), "2", "ERP account: posting tasks"],
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                check=True,
                timeout=300,
            )
        return time.monotonic() - started

    def start(self) -> None:
        for name in COMPONENTS:
            args = [name, "--port", str(self.port)] if name == "api-server" else [name]
            out = (self.stack.logs / f"bench-stream-{name}.log").open("ab")
            self.procs[name] = subprocess.Popen(
                [self.airflow, *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )

    def alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"airflow {name} exited ({proc.returncode}); see .local/logs/bench-stream-{name}.log"
                )

    def wait_ready(self, timeout: float = 300) -> float:
        """Until the API server answers and the triggerer runs the inbox watcher."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            self.alive()
            try:
                ok = (
                    httpx.get(f"http://127.0.0.1:{self.port}/api/v2/monitor/health", timeout=2).status_code
                    == 200
                )
            except httpx.HTTPError:
                ok = False
            if ok:
                with psycopg.connect(self.meta_dsn) as conn:
                    row = conn.execute(
                        "SELECT count(*) FROM trigger t JOIN asset_watcher w ON w.trigger_id = t.id"
                        " WHERE t.triggerer_id IS NOT NULL"
                    ).fetchone()
                if row and row[0]:
                    return time.monotonic() - started
            time.sleep(1.0)
        raise TimeoutError("Airflow did not become ready (API server + inbox watcher in the triggerer)")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log.warning("airflow %s did not stop on SIGTERM; killing it", name)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.procs.clear()


def _prepare_reference(stack: Stack) -> None:
    """One complete reference extract, as the batch DAG would have left it."""
    from datetime import timedelta

    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.extract import psa as psa_extract
    from psa_erp_sync.stream.time_expense import REFERENCE_ENDPOINTS

    window = psa_extract.plan_window(
        None, mode="full", as_of=datetime.now(UTC), overlap=timedelta(0), sweep_days=0
    )
    with (
        HarvestClient(base_url=stack.url("psa"), token="bench", account_id="1") as client,
        psycopg.connect(stack.dsn, autocommit=True) as conn,
    ):
        for endpoint in REFERENCE_ENDPOINTS:
            psa_extract.extract_endpoint(
                conn,
                client,
                endpoint=endpoint,
                run_key=f"bench_stream/reference{endpoint}",
                window=window,
                per_page=2000,
            )


def _ingress_roundtrips(port: int, n: int) -> list[float]:
    """Direct signed POSTs (an event type no DAG watches): accepted = committed to the inbox."""
    times = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for i in range(n):
            did = str(uuid.uuid4())
            body = json.dumps(
                {
                    "delivery_id": did,
                    "event": "milestone.completed",
                    "occurred_at": datetime.now(UTC).isoformat(),
                    "data": {"id": 10_000_000 + i},
                }
            ).encode()
            ts = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-PSA-Delivery-Id": did,
                "X-PSA-Event": "milestone.completed",
                "X-PSA-Timestamp": ts,
                "X-PSA-Signature": _sign(ts, body),
            }
            started = time.perf_counter()
            response = client.post("/ingress/psa/events", content=body, headers=headers)
            times.append(time.perf_counter() - started)
            if response.status_code != 202:
                raise RuntimeError(f"ingress answered {response.status_code}: {response.text[:200]}")
    return times


def _approve(psa_url: str, ids: list[int], rate: float, seed: int) -> float:
    rng = random.Random(seed)  # noqa: S311 (arrival times, not cryptography)
    started = time.monotonic()
    with httpx.Client(base_url=psa_url, timeout=30) as client:
        for entry_id in ids:
            client.post(f"/admin/time_entries/{entry_id}/approve").raise_for_status()
            time.sleep(rng.expovariate(rate))
    return time.monotonic() - started


def _wait_drained(stack: Stack, airflow: Airflow, ids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        airflow.alive()
        with psycopg.connect(stack.dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status <> 'processed'), count(*) FROM inbox.event"
                " WHERE event_type = 'time_entry.approved' AND source_id = ANY(%s)",
                ([str(i) for i in ids],),
            ).fetchone()
        assert row is not None
        if row[1] >= len(ids) and row[0] == 0:
            return
        time.sleep(1.0)
    log.warning("not every approval was processed within %.0f s; measuring what was", timeout)


def _collect(stack: Stack, airflow: Airflow, ids: list[int]) -> list[dict[str, Any]]:
    with psycopg.connect(stack.dsn) as conn:
        events = conn.execute(
            """
            SELECT e.seq, e.source_id, e.received_at, e.claimed_by, e.claimed_at,
                   (SELECT min(a.finished_at) FROM ledger.posting p JOIN ledger.attempt a USING (idempotency_key)
                     WHERE p.record_type = 'timebill' AND p.source_id = e.source_id AND a.outcome = 'confirmed'
                       AND a.finished_at >= e.received_at) AS confirmed_at
            FROM inbox.event e
            WHERE e.event_type = 'time_entry.approved' AND e.source_id = ANY(%s) ORDER BY e.seq
            """,
            ([str(i) for i in ids],),
        ).fetchall()
    with psycopg.connect(airflow.meta_dsn) as meta:
        detections = [
            (int((extra or {}).get("payload", {}).get("max_seq", 0)), ts)
            for extra, ts in meta.execute("SELECT extra, timestamp FROM asset_event ORDER BY timestamp")
        ]
        runs = {
            run_id: (queued, started)
            for run_id, queued, started in meta.execute(
                "SELECT r.run_id, r.queued_at, ti.start_date FROM dag_run r LEFT JOIN task_instance ti"
                " ON ti.dag_id = r.dag_id AND ti.run_id = r.run_id AND ti.task_id = 'process_inbox'"
                " WHERE r.dag_id = %s",
                (DAG_ID,),
            )
        }
    rows = []
    for seq, source_id, received, run_id, claimed, confirmed in events:
        detected = next((ts for max_seq, ts in detections if max_seq >= seq and ts >= received), None)
        queued, task_start = runs.get(run_id, (None, None))
        rows.append(
            {
                "seq": seq,
                "source_id": source_id,
                "received": received,
                "detected": detected,
                "queued": queued,
                "task_start": task_start,
                "claimed": claimed,
                "confirmed": confirmed,
            }
        )
    return rows


STAGES = ("trigger_detection", "dag_run_creation", "task_start", "worker_startup_and_claim", "posting")


def breakdown(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """End-to-end latency and its stages over the events whose posting was confirmed.

    The timeline of an event is received -> detected (asset event) -> run queued -> task started
    -> claimed (inside the task, after the worker parsed the DAG and imported the code) ->
    confirmed (re-read, stage, validate, post). Each point is clamped to be no earlier than the
    one before: an event claimed by a run already on its way (it "rode" that run) spends nothing
    in run creation or task start, and its wait shows in the claim stage.
    """
    done = [r for r in rows if r["confirmed"] is not None]
    total = [(r["confirmed"] - r["received"]).total_seconds() for r in done]
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    rode = 0
    for r in done:
        if r["queued"] is not None and r["detected"] is not None and r["queued"] < r["detected"]:
            rode += 1
        points = [r["received"]]
        for key in ("detected", "queued", "task_start", "claimed", "confirmed"):
            value = r[key] if r[key] is not None else points[-1]
            points.append(max(value, points[-1]))
        for name, (a, b) in zip(STAGES, itertools.pairwise(points), strict=True):
            stages[name].append((b - a).total_seconds())
    return {
        "events_measured": len(done),
        "events_not_posted": len(rows) - len(done),
        "events_riding_an_earlier_run": rode,
        "end_to_end_s": summary(total),
        "stages_s": {name: summary(values) for name, values in stages.items()},
    }


def _wait_runs_idle(airflow: Airflow, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(airflow.meta_dsn) as meta:
            row = meta.execute(
                "SELECT count(*) FROM dag_run WHERE dag_id = %s AND state IN ('queued', 'running')", (DAG_ID,)
            ).fetchone()
        if row is not None and row[0] == 0:
            return
        time.sleep(1.0)


def wanted_approvals(events: int) -> int:
    """Approvals sent for ``events`` measured ones: 5 warm-up, and 20% more than measured
    because some approvals are quarantined or parked, never posted."""
    return int(events * 1.2) + 5


def consultants_for(events: int) -> int:
    """Consultants whose month holds enough unapproved time entries for ``events``, any month."""
    return max(10, -(-wanted_approvals(events) // int(PENDING_PER_CONSULTANT)))


def prepare(stack: Stack, *, events: int, consultants: int, seed: int, as_of: date) -> list[int]:
    """Seed the firm of ``as_of``'s settled month, extract its reference data once, and pick the
    unapproved time entries to approve (5 warm-up first)."""
    from devtools.demo import seed as seed_firm
    from simulators.firm.generator import FirmSpec, resolve_dates, settled_month

    firm_today, _, _ = resolve_dates(FirmSpec(month=settled_month(as_of)))
    seed_firm(
        stack,
        seed_value=seed,
        consultants=consultants,
        today=datetime(firm_today.year, firm_today.month, firm_today.day, tzinfo=UTC),
        mutations=False,
    )
    _prepare_reference(stack)
    with psycopg.connect(stack.dsn) as conn:
        pending = [
            r[0] for r in conn.execute("SELECT id FROM sim_psa.time_entries WHERE NOT is_closed ORDER BY id")
        ]
    want = wanted_approvals(events)
    if len(pending) < want:
        raise RuntimeError(
            f"only {len(pending)} unapproved entries for {want} approvals; raise --consultants"
        )
    random.Random(seed).shuffle(pending)  # noqa: S311
    return pending[:want]


def run(
    *,
    events: int = 500,
    rate: float = 2.0,
    consultants: int | None = None,
    seed: int = 5,
    port: int = 18180,
    port_offset: int = 900,
    ingress_samples: int = 200,
    drain_timeout: float = 600.0,
    as_of: date | None = None,
    database: str = "psa_erp_sync_bench_stream",
) -> dict[str, Any]:
    """Run the benchmark and return its figures (see the module docstring)."""
    as_of = as_of or datetime.now(UTC).date()
    consultants = consultants or consultants_for(events)
    load_before = os.getloadavg()
    result: dict[str, Any] = {
        "benchmark": "stream_latency",
        "goal_p95_s": GOAL_P95_S,
        "goal_p99_s": GOAL_P99_S,
        "rate_per_s": rate,
        "as_of": as_of.isoformat(),
        "consultants": consultants,
    }
    with Stack(database=database, fresh=True, port_offset=port_offset) as stack:
        stack.start_postgres()
        stack.start_simulators()
        chosen = prepare(stack, events=events, consultants=consultants, seed=seed, as_of=as_of)
        warmup, measured = chosen[:5], chosen[5:]
        httpx.post(
            f"{stack.url('psa')}/admin/webhooks",
            json={
                "url": f"http://127.0.0.1:{port}/ingress/psa/events",
                "secret": WEBHOOK_SECRET,
                "events": [
                    "time_entry.approved",
                    "time_entry.updated",
                    "time_entry.unapproved",
                    "expense.approved",
                ],
            },
            timeout=30,
        ).raise_for_status()
        airflow = Airflow(stack, port=port)
        try:
            result["airflow_db_migrate_s"] = round(airflow.migrate(), 1)
            airflow.start()
            result["airflow_ready_s"] = round(airflow.wait_ready(), 1)
            result["ingress_roundtrip_s"] = summary(_ingress_roundtrips(port, ingress_samples))
            _approve(stack.url("psa"), warmup, rate, seed)
            _wait_drained(stack, airflow, warmup, timeout=180)
            result["approvals"] = len(measured)
            result["approval_seconds"] = round(_approve(stack.url("psa"), measured, rate, seed + 1), 1)
            load_during = os.getloadavg()
            _wait_drained(stack, airflow, measured, timeout=drain_timeout)
            _wait_runs_idle(airflow)
            rows = _collect(stack, airflow, measured)
            with psycopg.connect(airflow.meta_dsn) as meta:
                runs = meta.execute(
                    "SELECT count(*), count(*) FILTER (WHERE state = 'success') FROM dag_run WHERE dag_id = %s",
                    (DAG_ID,),
                ).fetchone()
            assert runs is not None
            result["dag_runs"] = {"total": runs[0], "success": runs[1]}
        finally:
            airflow.stop()
    figures = breakdown(rows)
    result.update(figures)
    p95, p99 = figures["end_to_end_s"]["p95"], figures["end_to_end_s"]["p99"]
    result["goal_met"] = bool(
        p95 is not None
        and p95 <= GOAL_P95_S
        and p99 is not None
        and p99 <= GOAL_P99_S
        and figures["events_measured"] >= min(events, 500)
    )
    result["load_average"] = {
        "before": [round(x, 2) for x in load_before],
        "during": [round(x, 2) for x in load_during],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    result["cpus"] = os.cpu_count()
    return result


# --------------------------------------------------------------------------- the consumer path

INGRESS_PORT = 18110  # plus --port-offset (the simulators are 18101-18107 plus it)
# Issue 16, deliverable 6: p95 of the webhooks received while a batch posting pass runs.
WITH_BATCH_P95_S = threshold("stream_batch_p95_s")
ERP_ACCOUNT = "TSTDRV100001"  # the account of the stack's ERP connection and of the posting CLI


class Ingress:
    """The webhook ingress app (as the API server mounts it) under uvicorn in a thread."""

    def __init__(self, dsn: str, port: int) -> None:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.routing import Mount

        from psa_erp_sync.api import ingress

        app = ingress.create_app(dsn=dsn, secrets=lambda _source: ingress.Secrets(WEBHOOK_SECRET.encode()))
        mounted = Starlette(routes=[Mount("/ingress", app=app)])  # where the API server mounts it
        self.port = port
        self.server = uvicorn.Server(
            uvicorn.Config(mounted, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, name="ingress", daemon=True)

    def __enter__(self) -> Ingress:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("the ingress did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _tool_env() -> dict[str, str]:
    """The environment of the consumer and batch-pass processes (the dev environment's config)."""
    return {**os.environ, "PSA_ERP_SYNC_ENV": os.environ.get("PSA_ERP_SYNC_ENV") or "dev"}


def _start_consumer(stack: Stack, bursts: Path) -> subprocess.Popen[bytes]:
    """``python -m psa_erp_sync.stream.consumer``: its own process, as on a worker."""
    out = (stack.logs / "bench-stream-consumer.log").open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "psa_erp_sync.stream.consumer",
            *("--dsn", stack.dsn, "--psa-url", stack.url("psa"), "--psa-account", "100001"),
            *("--erp-url", stack.url("erp"), "--erp-account", ERP_ACCOUNT),
            *("--name", "bench", "--lifetime", "7200", "--bursts-to", str(bursts)),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=_tool_env(),
        start_new_session=True,
    )


def _stage_month(stack: Stack) -> dict[str, Any]:
    """Extract and validate the month's time entries, as the batch DAG does before its posting
    step: canonical then holds the month, unposted, for the batch pass of ``--with-batch``."""
    from datetime import timedelta

    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.extract import psa as psa_extract
    from psa_erp_sync.stream.time_expense import REFERENCE_ENDPOINTS
    from psa_erp_sync.validation import time_expense as validation

    now = datetime.now(UTC)
    window = psa_extract.plan_window(None, mode="full", as_of=now, overlap=timedelta(0), sweep_days=0)
    with (
        HarvestClient(base_url=stack.url("psa"), token="bench", account_id="1") as client,
        psycopg.connect(stack.dsn, autocommit=True) as conn,
    ):
        psa_extract.extract_endpoint(
            conn,
            client,
            endpoint="/v2/time_entries",
            run_key="bench_stream/batch/v2/time_entries",
            window=window,
            per_page=2000,
        )
        keys = {e: f"bench_stream/reference{e}" for e in REFERENCE_ENDPOINTS}
        with conn.transaction():
            verdicts = validation.validate_run(
                conn,
                kind="time_entry",
                run_key="bench_stream/batch/v2/time_entries",
                ref=validation.PsaReference.from_staging(conn, keys),
                config=load_config(),
                as_of=now,
                dag_run_id="bench_stream_batch",
            )
    return verdicts.as_dict()


def _start_batch_passes(
    stack: Stack, passes: Path, stop: Path, *, hand_off: bool, concurrency: int | None = None
) -> subprocess.Popen[bytes]:
    """Batch posting passes of the month's time entries back to back until ``stop`` exists
    (``devtools/bench_stream_batch.py``: the posting task's path, the same lock, ledger and account
    budget as the DAG's posting task; each pass after the first re-posts the month)."""
    out = (stack.logs / "bench-stream-batch-pass.log").open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devtools.bench_stream_batch",
            *("--dsn", stack.dsn, "--erp-url", stack.url("erp"), "--account-id", ERP_ACCOUNT),
            *("--passes-to", str(passes), "--stop-file", str(stop)),
            *(() if hand_off else ("--no-hand-off",)),
            *(("--concurrency", str(concurrency)) if concurrency else ()),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=_tool_env(),
        start_new_session=True,
    )


def _wait_batch_holds_the_lock(stack: Stack, batch: subprocess.Popen[bytes], timeout: float = 300) -> None:
    """Until the batch pass holds its posting lock (the consumer is idle: nobody else can)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if batch.poll() is not None:
            raise RuntimeError("the batch pass ended before the approvals began; see its log")
        with psycopg.connect(stack.dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                " WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'psa_erp_sync posting lock'"
                " AND a.datname = current_database()"  # the server is shared with other databases
            ).fetchone()
        if row and row[0]:
            return
        time.sleep(0.2)
    raise TimeoutError("the batch pass did not take its posting lock")


def _collect_consumer(stack: Stack, ids: list[int]) -> list[dict[str, Any]]:
    return collect_consumer(stack.dsn, ids)


def collect_consumer(dsn: str, ids: list[int]) -> list[dict[str, Any]]:
    """Per approval: received, claimed, and the first confirmed posting of its record after it
    was received (the confirmations of the approved records read once: with batch passes the
    ledger holds hundreds of thousands of attempts)."""
    wanted = [str(i) for i in ids]
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """
            WITH conf AS MATERIALIZED (
                SELECT p.source_id, a.finished_at
                FROM ledger.posting p JOIN ledger.attempt a USING (idempotency_key)
                WHERE p.record_type = 'timebill' AND p.source_system = 'psa' AND p.source_id = ANY(%(ids)s)
                  AND a.outcome = 'confirmed'
            )
            SELECT e.received_at, e.claimed_at,
                   (SELECT min(c.finished_at) FROM conf c
                     WHERE c.source_id = e.source_id AND c.finished_at >= e.received_at) AS confirmed_at,
                   e.claimed_by
            FROM inbox.event e
            WHERE e.event_type = 'time_entry.approved' AND e.source_id = ANY(%(ids)s) ORDER BY e.seq
            """,
            {"ids": wanted},
        ).fetchall()
    return [{"received": r[0], "claimed": r[1], "confirmed": r[2], "claimed_by": r[3]} for r in rows]


def consumer_breakdown(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """End to end and its two stages over the posted events: received (inbox commit) -> claimed
    by the consumer (NOTIFY wake-up, or the wait for the burst before to finish) -> confirmed
    (re-read, stage, validate, post)."""
    done = [r for r in rows if r["confirmed"] is not None and r["claimed"] is not None]
    claim = [max(0.0, (r["claimed"] - r["received"]).total_seconds()) for r in done]
    post = [max(0.0, (r["confirmed"] - max(r["claimed"], r["received"])).total_seconds()) for r in done]
    total = [(r["confirmed"] - r["received"]).total_seconds() for r in done]
    return {
        "events_measured": len(done),
        "events_not_posted": len(rows) - len(done),
        "end_to_end_s": summary(total),
        "stages_s": {"consumer_claim": summary(claim), "posting": summary(post)},
    }


def _burst_figures(path: Path) -> dict[str, Any]:
    """The consumer's own per-burst timings (its ``--bursts-to`` file)."""
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    parts: dict[str, list[float]] = {}
    for line in lines:
        for name, seconds in line["seconds"].items():
            parts.setdefault(name, []).append(float(seconds))
    return {
        "bursts": len(lines),
        "events_per_burst": summary([float(line["claimed"]) for line in lines]),
        "seconds": {name: summary(values) for name, values in parts.items()},
    }


def _read_passes(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    for line in lines:
        line["started"] = datetime.fromisoformat(line["started"])
        line["ended"] = datetime.fromisoformat(line["ended"])
    return lines


def during_passes(rows: list[dict[str, Any]], passes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events received while a batch pass was running (between its start and its end)."""
    return [r for r in rows if any(p["started"] <= r["received"] <= p["ended"] for p in passes)]


def _batch_figures(passes: list[dict[str, Any]], approvals: tuple[datetime, datetime]) -> dict[str, Any]:
    """What the batch passes did, and how much of the approvals' time one was running."""
    first, last = approvals
    covered = sum(
        max(0.0, (min(p["ended"], last) - max(p["started"], first)).total_seconds()) for p in passes
    )
    span = max((last - first).total_seconds(), 1e-9)
    return {
        "passes": len(passes),
        "failed_passes": sum(1 for p in passes if p.get("failed")),
        "postings_sent": sum(int(p.get("total") or 0) for p in passes),
        "posted": sum(int(p.get("posted") or 0) for p in passes),
        "still_pending_after_last": passes[-1].get("still_pending") if passes else None,
        "hand_offs": sum(int(p.get("hand_offs") or 0) for p in passes),
        "pass_seconds": summary([(p["ended"] - p["started"]).total_seconds() for p in passes]),
        "cpu_s": round(sum(float(p.get("cpu_s") or 0) for p in passes), 1),
        "share_of_approvals_with_a_pass_running": round(covered / span, 3),
    }


def _measure_consumer(
    stack: Stack,
    consumer: subprocess.Popen[bytes],
    chosen: list[int],
    *,
    ingress_port: int,
    rate: float,
    seed: int,
    with_batch: bool,
    bursts: Path,
    hand_off: bool = True,
    batch_concurrency: int | None = None,
) -> dict[str, Any]:
    """Warm up, then approve the measured entries (with batch passes running if asked)."""
    warmup, measured = chosen[:5], chosen[5:]
    result: dict[str, Any] = {"ingress_roundtrip_s": summary(_ingress_roundtrips(ingress_port, 200))}
    _approve(stack.url("psa"), warmup, rate, seed)
    _wait_drained_consumer(stack, consumer, warmup, timeout=180)
    batch = None
    passes, stop = LOCAL / "bench-stream-passes.jsonl", LOCAL / "bench-stream-stop"
    passes.unlink(missing_ok=True)
    stop.unlink(missing_ok=True)
    if with_batch:  # the month validated now, so that the batch passes (not the consumer) post it
        result["batch_month_validated"] = _stage_month(stack)
        batch = _start_batch_passes(stack, passes, stop, hand_off=hand_off, concurrency=batch_concurrency)
        _wait_batch_holds_the_lock(stack, batch)
    approvals_started = datetime.now(UTC)
    result["approvals"] = len(measured)
    result["approval_seconds"] = round(_approve(stack.url("psa"), measured, rate, seed + 1), 1)
    approvals_ended = datetime.now(UTC)
    result["load_during"] = [round(x, 2) for x in os.getloadavg()]
    if batch is not None:  # the pass running now is the last one
        stop.touch()
    _wait_drained_consumer(stack, consumer, measured, timeout=600)
    rows = _collect_consumer(stack, measured)
    result.update(consumer_breakdown(rows))
    result["claimed_by"] = sorted({str(r["claimed_by"]) for r in rows})
    if batch is not None:
        code = batch.wait(timeout=1800)
        ran = _read_passes(passes)
        result["batch_passes"] = {
            "exit": code,
            "hand_off": hand_off,
            **_batch_figures(ran, (approvals_started, approvals_ended)),
        }
        result["during_batch_pass"] = consumer_breakdown(during_passes(rows, ran))
    result["consumer_bursts"] = _burst_figures(bursts)
    return result


def _wait_drained_consumer(
    stack: Stack, consumer: subprocess.Popen[bytes], ids: list[int], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if consumer.poll() is not None:
            raise RuntimeError("the consumer exited; see .local/logs/bench-stream-consumer.log")
        try:
            with psycopg.connect(stack.dsn) as conn:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE status <> 'processed'), count(*) FROM inbox.event"
                    " WHERE event_type = 'time_entry.approved' AND source_id = ANY(%s)",
                    ([str(i) for i in ids],),
                ).fetchone()
        except psycopg.OperationalError as exc:  # a shared server out of connections: look again
            log.warning("polling the inbox failed (%s); trying again", exc)
            time.sleep(1.0)
            continue
        assert row is not None
        if row[1] >= len(ids) and row[0] == 0:
            return
        time.sleep(0.5)
    log.warning("not every approval was processed within %.0f s; measuring what was", timeout)


def run_consumer(
    *,
    events: int = 500,
    rate: float = 2.0,
    consultants: int | None = None,
    seed: int = 5,
    port_offset: int = 1350,
    with_batch: bool = False,
    hand_off: bool = True,
    batch_concurrency: int | None = None,
    as_of: date | None = None,
    database: str = "psa_erp_sync_bench_stream",
) -> dict[str, Any]:
    """The consumer path: the ingress app, one consumer process, the PSA delivering webhooks; with
    ``with_batch`` batch posting passes of the month run back to back while the approvals arrive
    (``hand_off=False``: each keeps the posting lock for its whole pass, as before the hand-off)."""
    as_of = as_of or datetime.now(UTC).date()
    consultants = consultants or consultants_for(events)
    load_before = os.getloadavg()
    result: dict[str, Any] = {
        "benchmark": "stream_latency",
        "path": "consumer",
        "with_batch": with_batch,
        "goal_p95_s": WITH_BATCH_P95_S if with_batch else GOAL_P95_S,
        "goal_p99_s": None if with_batch else GOAL_P99_S,
        "rate_per_s": rate,
        "as_of": as_of.isoformat(),
        "consultants": consultants,
        "batch_concurrency": batch_concurrency,
    }
    bursts = LOCAL / "bench-stream-bursts.jsonl"
    bursts.unlink(missing_ok=True)
    cpu_before = _cpu_seconds()
    with Stack(database=database, fresh=True, port_offset=port_offset) as stack:
        stack.start_postgres()
        stack.start_simulators(timeout_s=300)  # a loaded shared machine starts them slowly
        chosen = prepare(stack, events=events, consultants=consultants, seed=seed, as_of=as_of)
        ingress_port = INGRESS_PORT + port_offset
        _subscribe(stack.url("psa"), ingress_port)
        backend_before = _backend_cpu(stack)
        with Ingress(stack.dsn, ingress_port):
            consumer = _start_consumer(stack, bursts)
            try:
                result.update(
                    _measure_consumer(
                        stack,
                        consumer,
                        chosen,
                        ingress_port=ingress_port,
                        rate=rate,
                        seed=seed,
                        with_batch=with_batch,
                        bursts=bursts,
                        hand_off=hand_off,
                        batch_concurrency=batch_concurrency,
                    )
                )
            finally:
                consumer.terminate()
                consumer.wait(timeout=60)
        result["cpu_s"] = {
            "client_processes": round(_cpu_seconds() - cpu_before, 1),
            "postgres_backends": _delta(_backend_cpu(stack), backend_before),
        }
    if with_batch:  # the goal is about the webhooks received while a batch pass runs
        during = result.get("during_batch_pass", {})
        p95 = during.get("end_to_end_s", {}).get("p95")
        result["goal_met"] = bool(
            p95 is not None
            and p95 <= WITH_BATCH_P95_S
            and during.get("events_measured", 0) >= min(events, 500)
        )
    else:
        p95, p99 = result["end_to_end_s"]["p95"], result["end_to_end_s"]["p99"]
        result["goal_met"] = bool(
            p95 is not None
            and p99 is not None
            and p95 <= GOAL_P95_S
            and p99 <= GOAL_P99_S
            and result["events_measured"] >= min(events, 500)
        )
    result["load_average"] = {
        "before": [round(x, 2) for x in load_before],
        "during": result.pop("load_during"),
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    result["cpus"] = os.cpu_count()
    return result


def _cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the consumer, the simulators
    and the batch passes are children, reaped before this is read at the end)."""
    own = os.times()
    return own.user + own.system + own.children_user + own.children_system


def _backend_cpu(stack: Stack) -> float | None:
    """CPU seconds of the whole PostgreSQL server, when it runs on this machine and /proc shows it
    (the server is shared: a figure for the run, not for this benchmark alone)."""
    try:
        with psycopg.connect(stack.dsn) as conn:
            row = conn.execute(
                "SELECT pg_postmaster_start_time(), current_setting('data_directory')"
            ).fetchone()
        pid_file = Path(str(row[1])) / "postmaster.pid" if row else None
        if pid_file is None or not pid_file.exists():
            return None
        pid = int(pid_file.read_text().split()[0])
    except (psycopg.Error, OSError, ValueError):
        return None
    return _tree_cpu(pid)


def _tree_cpu(pid: int) -> float | None:
    """utime + stime + cutime + cstime of ``pid`` and its live children (/proc), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for p in [pid, *map(int, children)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / tick
    return round(total, 1)


def _delta(after: float | None, before: float | None) -> float | None:
    return round(after - before, 1) if after is not None and before is not None else None


def _subscribe(psa_url: str, port: int) -> None:
    httpx.post(
        f"{psa_url}/admin/webhooks",
        json={
            "url": f"http://127.0.0.1:{port}/ingress/psa/events",
            "secret": WEBHOOK_SECRET,
            "events": [
                "time_entry.approved",
                "time_entry.updated",
                "time_entry.unapproved",
                "expense.approved",
            ],
        },
        timeout=30,
    ).raise_for_status()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        help="measured approvals (default 500; 600 with --with-batch, so that >= 500 arrive during a pass)",
    )
    parser.add_argument("--rate", type=float, default=2.0, help="mean approvals per second (Poisson)")
    parser.add_argument(
        "--consultants", type=int, default=None, help="default: enough for --events in any month"
    )
    parser.add_argument("--port", type=int, default=18180, help="Airflow API server port (--path airflow)")
    parser.add_argument(
        "--path",
        choices=("consumer", "airflow"),
        default="consumer",
        help="consumer: the long-running inbox consumer (default); airflow: a DAG run per burst",
    )
    parser.add_argument(
        "--with-batch",
        action="store_true",
        help="run batch posting passes of the month back to back meanwhile (consumer path)",
    )
    parser.add_argument(
        "--no-hand-off",
        action="store_true",
        help="with --with-batch: each batch pass keeps the posting lock for its whole pass (as before)",
    )
    parser.add_argument(
        "--batch-concurrency",
        type=int,
        default=None,
        help="with --with-batch: the batch passes' ERP requests in flight (default: the account's limit)",
    )
    parser.add_argument("--port-offset", type=int, default=None, help="added to the simulators' ports")
    parser.add_argument(
        "--database",
        default=None,
        help="the benchmark's ODS database, dropped and created (default psa_erp_sync_bench_stream[_batch])",
    )
    add_as_of(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    database = args.database or ("psa_erp_sync_bench_stream" + ("_batch" if args.with_batch else ""))
    events = args.events or (600 if args.with_batch else 500)
    if args.path == "consumer":
        figures = run_consumer(
            events=events,
            rate=args.rate,
            consultants=args.consultants,
            port_offset=1350 if args.port_offset is None else args.port_offset,
            with_batch=args.with_batch,
            hand_off=not args.no_hand_off,
            batch_concurrency=args.batch_concurrency,
            as_of=args.as_of,
            database=database,
        )
    else:
        figures = run(
            events=events,
            rate=args.rate,
            consultants=args.consultants,
            port=args.port,
            port_offset=900 if args.port_offset is None else args.port_offset,
            as_of=args.as_of,
            database=database,
        )
    sys.stderr.write(latency_table(figures))
    print(json.dumps(figures, indent=2, default=str))
    return 0


def latency_table(figures: dict[str, Any]) -> str:
    """The breakdown as a text table: webhook accepted -> ERP posting confirmed, per stage."""
    lines = [f"\n{'stage (s)':<28}{'p50':>8}{'p95':>8}{'p99':>8}"]
    rows = [
        ("ingress round trip", figures.get("ingress_roundtrip_s", {})),
        *figures.get("stages_s", {}).items(),
        ("end to end", figures.get("end_to_end_s", {})),
    ]
    if "during_batch_pass" in figures:
        during = figures["during_batch_pass"]
        rows.append(
            (f"during a batch pass ({during.get('events_measured')})", during.get("end_to_end_s", {}))
        )
    for name, stats in rows:
        cells = "".join(
            f"{stats.get(q) if stats.get(q) is not None else '-':>8}" for q in ("p50", "p95", "p99")
        )
        lines.append(f"{name:<28}{cells}")
    lines.append(
        f"events measured: {figures.get('events_measured')}; goal p95 <= {figures.get('goal_p95_s')} s, "
        f"p99 <= {figures.get('goal_p99_s')} s met: {figures.get('goal_met')}\n"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
