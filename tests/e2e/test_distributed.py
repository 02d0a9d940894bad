"""The distributed engine, end to end: docker-compose.yaml's topology as processes, with the simulators.

api-server (with the webhook ingress), scheduler, dag-processor, triggerer and two Celery workers
over a real Redis, a PostgreSQL metadata DB and ODS behind scram-sha-256 passwords. A seeded month
goes through ``master_data_sync``, ``project_setup``, ``time_expense_posting`` (one Celery worker
is SIGKILLed, whole process tree, while ``post_timebills`` runs on it) and
``revenue_forecast_refresh``; signed PSA webhooks reach the ingress and ``time_expense_stream``
posts them. The month ends with the ERP equal to the approved PSA set to the cent.

Run with ``make e2e`` (about 5-8 minutes on 2 cores); progress is printed as a timeline.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import psycopg
import pytest

from tests.e2e.topology import ROOT, Timeline, Topology

pytestmark = [pytest.mark.e2e]

DAGS = (
    "master_data_sync",
    "project_setup",
    "time_expense_posting",
    "revenue_forecast_refresh",
    "time_expense_stream",
)
WORKERS = ("worker-1", "worker-2")
CONSULTANTS = 40
STREAM_APPROVALS = 8
# Generous: on a loaded 2-core machine one Airflow task takes 10-20 s from queue to end.
RUN_TIMEOUT = 600.0
T = TypeVar("T")


def wait_for(
    what: str, probe: Callable[[], T | None], topo: Topology, timeout: float, every: float = 1.0
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topo.alive()
        found = probe()
        if found is not None and found is not False:
            return found
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; logs in {topo.logs}")


def meta_rows(topo: Topology, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(topo.login_dsn("meta")) as conn:
        return list(conn.execute(sql, args).fetchall())


def run_state(topo: Topology, dag_id: str, run_id: str) -> str | None:
    rows = meta_rows(topo, "SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", dag_id, run_id)
    return str(rows[0][0]) if rows else None


def wait_run(topo: Topology, dag_id: str, run_id: str, timeout: float) -> None:
    def done() -> str | None:
        state = run_state(topo, dag_id, run_id)
        return state if state in ("success", "failed") else None

    state = wait_for(f"{dag_id} run {run_id}", done, topo, timeout)
    if state != "success":
        failed = meta_rows(
            topo,
            "SELECT task_id, state, try_number, hostname FROM task_instance WHERE dag_id = %s AND run_id = %s"
            " AND state NOT IN ('success', 'skipped')",
            dag_id,
            run_id,
        )
        raise AssertionError(
            f"{dag_id} run {run_id} ended {state}: {failed}; logs in {topo.opt_airflow / 'logs'}"
        )


def trigger(api: httpx.Client, dag_id: str, conf: dict[str, Any] | None = None) -> str:
    response = api.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
    response.raise_for_status()
    return str(response.json()["dag_run_id"])


def wait_success_after(topo: Topology, dag_id: str, after: datetime) -> str:
    """Until a run of ``dag_id`` queued after ``after`` (scheduled, asset-triggered or manual) succeeded."""
    return wait_for(dag_id, lambda: successful_run_after(topo, dag_id, after), topo, RUN_TIMEOUT, every=2)


def successful_run_after(topo: Topology, dag_id: str, after: datetime) -> str | None:
    rows = meta_rows(
        topo,
        "SELECT run_id FROM dag_run WHERE dag_id = %s AND state = 'success' AND queued_at >= %s ORDER BY queued_at",
        dag_id,
        after,
    )
    return str(rows[0][0]) if rows else None


def test_distributed_engine_survives_a_killed_worker() -> None:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip(
            "redis-server is not installed, and the e2e needs a real Redis broker: install it"
            " (Debian/Ubuntu: `sudo apt-get install redis-server`; macOS: `brew install redis`)"
            " and run `make e2e` again"
        )
    log = Timeline()
    work = ROOT / ".local" / "e2e"
    topo = Topology(work, timeline=log)
    from devtools import pgserver

    pgserver.stop(topo.pg_data)  # a server left by an interrupted run
    shutil.rmtree(work, ignore_errors=True)
    topo.logs.mkdir(parents=True)
    try:
        _run(topo, redis_server, log)
    finally:
        log("stopping every process the e2e started")
        topo.stop()


def _run(topo: Topology, redis_server: str, log: Timeline) -> None:
    # -- the topology -------------------------------------------------------------------------------
    log("PostgreSQL: fresh server, scram-sha-256 everywhere, compose/postgres-init.sh")
    topo.start_postgres()
    for role, database in (("airflow", "airflow"), ("ods", "ods")):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(topo.dsn(role, None, database), connect_timeout=5).close()
    # airflow-init (admin user, metadata DB and ODS migrations) needs only PostgreSQL: it runs meanwhile.
    init_errors: list[BaseException] = []
    init = threading.Thread(target=_recording(topo.init_airflow, init_errors), name="airflow-init")
    log("airflow-init (admin user, airflow db migrate, ODS migrations as role ods) starts alongside")
    init.start()
    topo.start_redis(redis_server)
    log("Redis broker on port %d; simulators", topo.ports["redis"])
    topo.start_simulators()
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    now = datetime.now(UTC)
    firm = generate_firm(FirmSpec(seed=7, consultants=CONSULTANTS, today=now.date()))
    load_firm(firm, psa_url=topo.url("sim-psa"), erp_url=topo.url("sim-erp"), crm_url=topo.url("sim-crm"))
    log("seeded a month: %d consultants", CONSULTANTS)
    init.join()
    if init_errors:
        raise init_errors[0]
    log("airflow-init done; Airflow: api-server, scheduler, dag-processor, triggerer, workers %s", WORKERS)
    topo.start_airflow(WORKERS)
    topo.wait_api()
    topo.wait_workers(WORKERS)
    log("API server and both workers answer")
    api = topo.api()

    def parsed() -> bool:
        return all(api.get(f"/api/v2/dags/{dag_id}").status_code == 200 for dag_id in DAGS)

    wait_for("the DAGs to be parsed", parsed, topo, timeout=RUN_TIMEOUT, every=3)
    log("DAGs parsed")

    from devtools.local_airflow import subscribe_psa_webhook

    ingress_url = f"{topo.url('airflow-apiserver')}/ingress/psa/events"
    subscribe_psa_webhook(topo.url("sim-psa"), ingress_url, topo.variables["PSA_WEBHOOK_SECRET"])
    deal = next(o for o in firm.crm["opportunities"] if o["stage"] not in ("Closed Won", "Closed Lost"))
    httpx.post(f"{topo.url('sim-crm')}/admin/opportunities/{deal['id']}/close_won", json={}, timeout=30)

    # -- master data (its latest scheduled run, created on unpause), project setup on its asset ----------
    started = datetime.now(UTC)
    for dag_id in ("master_data_sync", "project_setup", "time_expense_stream"):
        unpause(api, dag_id)
    log("master_data_sync unpaused: its latest scheduled run starts")
    wait_success_after(topo, "master_data_sync", started)
    log("master_data_sync succeeded; waiting for project_setup (scheduled on ods_master_data)")
    wait_success_after(topo, "project_setup", started)
    log("project_setup succeeded")

    # -- posting, with a worker SIGKILLed mid-flight ----------------------------------------------------
    erp = httpx.Client(base_url=topo.url("sim-erp"), timeout=30)
    posting_started = datetime.now(UTC)
    run = trigger(api, "time_expense_posting")
    unpause(api, "time_expense_posting")
    log("time_expense_posting %s triggered; waiting for post_timebills to run", run)

    def posting_on() -> tuple[str, str, int] | None:
        rows = meta_rows(
            topo,
            "SELECT run_id, hostname, try_number FROM task_instance WHERE dag_id = 'time_expense_posting'"
            " AND task_id = 'post_timebills' AND state = 'running' AND hostname = ANY(%s)",
            list(WORKERS),
        )
        return (str(rows[0][0]), str(rows[0][1]), int(rows[0][2])) if rows else None

    killed_run, victim, killed_try = wait_for(
        "post_timebills running", posting_on, topo, timeout=RUN_TIMEOUT, every=0.3
    )
    erp.put("/admin/config", json={"service_time_ms": 2500}).raise_for_status()
    requests_before = int(erp.get("/admin/stats").json()["requests"])

    def in_flight() -> bool:
        stats = erp.get("/admin/stats").json()
        return int(stats["in_flight"]) > 0 and int(stats["requests"]) > requests_before

    wait_for("post_timebills requests in flight at the ERP", in_flight, topo, timeout=300, every=0.2)
    killed_at = datetime.now(UTC)
    pids = topo.kill_tree(victim)
    log("SIGKILLed %s (%d processes) while post_timebills try %d posted", victim, len(pids), killed_try)
    erp.put("/admin/config", json={"service_time_ms": 0}).raise_for_status()
    survivor = next(w for w in WORKERS if w != victim)

    def retried() -> tuple[str, int] | None:
        rows = meta_rows(
            topo,
            "SELECT hostname, try_number FROM task_instance WHERE dag_id = 'time_expense_posting'"
            " AND run_id = %s AND task_id = 'post_timebills' AND try_number > %s"
            # Until the next try starts, the row keeps the killed try's host name.
            " AND state IN ('running', 'success') AND start_date > %s",
            killed_run,
            killed_try,
            killed_at,
        )
        return (str(rows[0][0]), int(rows[0][1])) if rows else None

    retry_host, retry_try = wait_for(
        "the retry of post_timebills", retried, topo, timeout=RUN_TIMEOUT, every=0.5
    )
    log("post_timebills try %d runs on %s", retry_try, retry_host)
    assert retry_host == survivor, f"the retry ran on {retry_host}, not on the surviving {survivor}"
    topo.start_worker(victim)  # compose's `restart: always`
    log("restarted %s (restart: always)", victim)
    wait_run(topo, "time_expense_posting", killed_run, timeout=RUN_TIMEOUT)
    if killed_run != run:
        wait_run(topo, "time_expense_posting", run, timeout=RUN_TIMEOUT)
    log("time_expense_posting succeeded (its reconcile_erp proved ERP = approved PSA set)")

    # -- the forecast, on the posting and master data assets ---------------------------------------------
    unpause(api, "revenue_forecast_refresh")
    wait_success_after(topo, "revenue_forecast_refresh", posting_started)
    log("revenue_forecast_refresh succeeded")

    # -- signed PSA webhooks -> ingress -> inbox -> time_expense_stream ------------------------------------
    with psycopg.connect(topo.login_dsn("sim")) as conn:
        pending = [
            int(r[0])
            for r in conn.execute(
                "SELECT id FROM sim_psa.time_entries WHERE NOT is_closed ORDER BY id LIMIT %s",
                (STREAM_APPROVALS,),
            )
        ]
    assert len(pending) == STREAM_APPROVALS, "the seeded month has too few unapproved entries"
    for entry_id in pending:
        httpx.post(
            f"{topo.url('sim-psa')}/admin/time_entries/{entry_id}/approve", timeout=30
        ).raise_for_status()
    log("approved %d time entries in the PSA; its webhooks go to %s", len(pending), ingress_url)

    def streamed() -> bool:
        with psycopg.connect(topo.login_dsn("ods")) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'processed'), count(*) FROM inbox.event"
                " WHERE event_type = 'time_entry.approved' AND source_id = ANY(%s)",
                ([str(i) for i in pending],),
            ).fetchone()
        assert row is not None
        return row[1] >= len(pending) and row[0] == row[1]

    wait_for("the stream to process the approvals", streamed, topo, timeout=RUN_TIMEOUT, every=2)
    with psycopg.connect(topo.login_dsn("ods")) as conn:
        stream_runs = sorted(
            str(r[0])
            for r in conn.execute(
                "SELECT DISTINCT claimed_by FROM inbox.event WHERE event_type = 'time_entry.approved'"
                " AND source_id = ANY(%s)",
                ([str(i) for i in pending],),
            )
        )
    for stream_run in stream_runs:  # the event-driven runs that claimed them end green
        wait_run(topo, "time_expense_stream", stream_run, timeout=RUN_TIMEOUT)
    log("time_expense_stream posted them in %d event-driven run(s)", len(stream_runs))

    # -- the month's books, the workers, the ingress role, lineage ----------------------------------------
    _assert_books(topo, erp, pending)
    log("books: 0 duplicates, 0 missing, ERP = approved PSA set to the cent; max in flight within the limit")
    _assert_both_workers(topo, victim, killed_run, killed_try)
    _assert_ingress_role(topo)
    assert topo.lineage is not None
    namespaces = {e.get("job", {}).get("namespace") for e in topo.lineage.events}
    expected = topo.env["AIRFLOW__OPENLINEAGE__NAMESPACE"]  # compose's, the environment's namespace
    assert expected in namespaces, f"no OpenLineage events over HTTP in {expected}: {namespaces}"
    log("OpenLineage over HTTP: %d events received", len(topo.lineage.events))


def _recording(target: Callable[[], None], errors: list[BaseException]) -> Callable[[], None]:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # re-raised in the test's thread after join()
            errors.append(exc)

    return run


def unpause(api: httpx.Client, dag_id: str) -> None:
    api.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()


def _assert_books(topo: Topology, erp: httpx.Client, streamed_ids: list[int]) -> None:
    """0 duplicates, 0 missing, ERP totals = the approved PSA set (via the ODS) to the cent."""
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.reconcile import erp_readback

    prefixes = {"timebill": "psa-te-", "expensereport": "psa-ex-"}
    with (
        psycopg.connect(topo.login_dsn("ods")) as conn,
        NetSuiteClient(base_url=topo.url("sim-erp"), account_id="TSTDRV100001", token="e2e") as client,
    ):
        for record_type, prefix in prefixes.items():
            want, want_rows = erp_readback.expected(conn, record_type)
            have, have_rows = erp_readback.actual(client, record_type, prefix)  # raises on a duplicate
            diff = erp_readback.differences(want_rows, have_rows)
            assert diff["missing_in_erp"] == 0, diff
            assert diff["unexpected_in_erp"] == 0, diff
            assert diff["different_in_erp"] == 0, diff
            assert want == have, f"{record_type}: expected {want} != ERP {have}"
            assert want.count > 0
        timebills = erp_readback.actual(client, "timebill", "psa-te-")[1]
        streamed = {str(i) for i in streamed_ids}
        # A streamed approval is posted, or held with a reason and an owner (quarantined, parked).
        held = {
            str(r[0])
            for r in conn.execute(
                "SELECT source_id FROM exceptions.item WHERE status = 'open' AND source_id = ANY(%s)",
                (list(streamed),),
            )
        }
        assert streamed & set(timebills), "no streamed approval reached the ERP"
        assert streamed <= set(timebills) | held, sorted(streamed - set(timebills) - held)
        # The approved PSA set: every approved PSA entry is canonical-approved or quarantined (open).
        with psycopg.connect(topo.login_dsn("sim")) as sim:
            psa = {
                str(r[0]): Decimal(r[1])
                for r in sim.execute("SELECT id, hours FROM sim_psa.time_entries WHERE is_closed")
            }
        canonical = {
            str(r[0])
            for r in conn.execute(
                "SELECT source_id FROM canonical.time_entry WHERE approved AND NOT is_deleted"
            )
        }
        quarantined = {
            str(r[0])
            for r in conn.execute(
                "SELECT source_id FROM exceptions.item WHERE kind = 'quarantine' AND record_type = 'time_entry'"
                " AND status = 'open'"
            )
        }
        assert set(psa) <= canonical | quarantined, sorted(set(psa) - canonical - quarantined)[:10]
        assert canonical <= set(psa), sorted(canonical - set(psa))[:10]
    # One ERP account, one concurrency budget across both workers: the account's limit is the one
    # compose's environment (PSA_ERP_SYNC_ENV) sets in config/environments/<env>.yaml; the
    # simulator counts every request that arrived at once (429s too).
    from psa_erp_sync.config import load_environment

    concurrency = load_environment(topo.env["PSA_ERP_SYNC_ENV"]).erp.concurrency
    load = erp.get("/admin/concurrency").json()["accounts"]
    assert load, "the ERP simulator saw no account"
    for name, seen in load.items():
        limit = concurrency.accounts.get(name, concurrency.default)
        assert int(seen["max_requested"]) <= limit, (name, seen, limit)


def _assert_both_workers(topo: Topology, victim: str, killed_run: str, killed_try: int) -> None:
    hosts = {
        str(r[0])
        for r in meta_rows(
            topo,
            "SELECT hostname FROM task_instance UNION SELECT hostname FROM task_instance_history",
        )
    }
    assert set(WORKERS) <= hosts, f"task instances ran on {hosts}, not on both workers"
    history = meta_rows(
        topo,
        "SELECT hostname, state FROM task_instance_history WHERE dag_id = 'time_expense_posting'"
        " AND run_id = %s AND task_id = 'post_timebills' AND try_number = %s",
        killed_run,
        killed_try,
    )
    assert history and history[0][0] == victim, history
    assert history[0][1] != "success", history


def _assert_ingress_role(topo: Topology) -> None:
    """The ingress wrote with ods_ingress, which may insert into the inbox and do nothing else."""
    with psycopg.connect(topo.login_dsn("ods")) as conn:
        users = {
            str(r[0])
            for r in conn.execute(
                "SELECT usename FROM pg_stat_activity WHERE datname = 'ods' AND usename IS NOT NULL"
            )
        }
    assert "ods_ingress" in users, f"the ingress does not hold an ods_ingress connection: {users}"
    with psycopg.connect(topo.login_dsn("ingress")) as conn:
        with conn.transaction(force_rollback=True):
            conn.execute(
                "INSERT INTO inbox.event (delivery_id, source_system, event_type, source_id, payload)"
                " VALUES ('e2e-role-probe-0001', 'psa', 'milestone.completed', '1', '{}'::jsonb)"
            )
        refused = (
            "UPDATE inbox.event SET status = 'processed'",
            "DELETE FROM inbox.event",
            "SELECT payload FROM inbox.event",
            "SELECT * FROM ledger.posting",
            "UPDATE canonical.time_entry SET approved = false",
            "DELETE FROM staging.raw_record",
            "SELECT * FROM exceptions.item",
        )
        for statement in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(statement)
