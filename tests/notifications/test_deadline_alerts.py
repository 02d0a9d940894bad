"""Deadline Alerts on the close path against real Airflow: a real scheduler, triggerer and
api-server on a fresh PostgreSQL metadata database, the plugin registering ``CloseDeadline``.

One DAG carries the production alerts (``close_deadline_alerts``) shifted to fire seconds after
its run starts; its only task sleeps longer. The scheduler marks the deadline missed, the
triggerer runs ``notify_deadline_missed``, and the owner's alert arrives at a real SMTP server.
Then the run is cleared through the REST API (``dry_run`` false): it answers 200; the same clear
of a control DAG whose deadline uses ``DAGRUN_QUEUED_AT`` answers 500 (apache/airflow#70368), so
the test tells the two apart. 100-165 s measured on the loaded, shared 2-core machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from psa_erp_sync.notifications.deadlines import close_deadline
from tests.conftest import SmtpSink, _server_dsn, _with_database, airflow_api_server, free_port

pytestmark = [pytest.mark.airflow, pytest.mark.integration]

DAG_ID = "time_expense_posting"  # the production rules of this DAG, on a stand-in DAG
LEGAL_ENTITY = "LE-UK1"
FIRES_AFTER = 10  # seconds after the run starts
PROBE = """
from datetime import datetime, timedelta

from airflow.sdk import dag, task
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from psa_erp_sync.notifications.deadlines import close_deadline_alerts, notify_deadline_missed


@dag(
    dag_id="{dag_id}",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    deadline=[
        a
        for a in close_deadline_alerts("{dag_id}", interval=timedelta(seconds={shift}))
        if a.reference.legal_entity == "{legal_entity}"
    ],
)
def probe():
    @task
    def slow_post():
        import time

        time.sleep(120)

    slow_post()


probe()


@dag(
    dag_id="queued_at_control",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=True,
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=1),
        callback=AsyncCallback(notify_deadline_missed, kwargs={{"dag_id": "x", "legal_entity": "LE-UK1"}}),
    ),
)
def control():
    @task
    def noop():
        pass

    noop()


control()
"""
BIN = Path(sys.executable).parent


@contextmanager
def _metadata_db() -> Iterator[str]:
    server = _server_dsn()
    name = f"pes_af_deadline_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(_with_database(server, name))
    auth = info.get("user", "postgres") + (f":{info['password']}" if info.get("password") else "")
    try:
        yield f"postgresql+psycopg://{auth}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _component(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "airflow"), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait(what: str, check: Any, timeout: float, logs: list[Path]) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if result := check():
            return result
        time.sleep(1)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def test_a_missed_close_deadline_alerts_the_owner_and_the_run_can_be_cleared(
    smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    import httpx

    now = datetime.now(UTC)
    computed = close_deadline(DAG_ID, LEGAL_ENTITY, now)
    assert computed is not None
    shift = (now + timedelta(seconds=FIRES_AFTER) - computed).total_seconds()
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "probe.py").write_text(
        PROBE.format(dag_id=DAG_ID, legal_entity=LEGAL_ENTITY, shift=round(shift, 3)), encoding="utf-8"
    )
    passwords = tmp_path / "passwords.json"
    passwords.write_text('{"ops": "ops-password"}')
    home = tmp_path / "airflow"
    logs = [tmp_path / f"{n}.log" for n in ("migrate", "reserialize", "api-server", "scheduler", "triggerer")]

    with ExitStack() as stack:
        sql_conn = stack.enter_context(_metadata_db())
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_conn,
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "ops:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API_AUTH__JWT_SECRET": "deadline-alert-test-secret-0123456789abcdef",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "PSA_ERP_SYNC_DEADLINE_ALERTS": "on",  # a real scheduler: the alerts are wired
        }
        with logs[0].open("w") as out:
            done = subprocess.run(
                [str(BIN / "airflow"), "db", "migrate"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        assert done.returncode == 0, logs[0].read_text()[-3000:]
        # The rest starts side by side: serializing the DAGs, the scheduler and triggerer (tasks
        # reach the api-server's execution API on its port), the api-server.
        port = free_port()
        env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://127.0.0.1:{port}/execution/"
        reserialize = stack.enter_context(_component(["dags", "reserialize"], env, logs[1]))
        stack.enter_context(_component(["scheduler"], env, logs[3]))
        stack.enter_context(_component(["triggerer"], env, logs[4]))
        base_url = stack.enter_context(airflow_api_server(env, logs[2], port=port))
        assert reserialize.wait(timeout=120) == 0, logs[1].read_text()[-3000:]

        token = httpx.post(
            f"{base_url}/auth/token", json={"username": "ops", "password": "ops-password"}, timeout=30
        ).json()["access_token"]
        api = stack.enter_context(
            httpx.Client(
                base_url=f"{base_url}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
        )
        triggered = api.post(f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None})
        assert triggered.status_code == 200, triggered.text
        run_id = triggered.json()["dag_run_id"]

        # The deadline was computed from the close calendar at run creation (not from queued_at).
        with psycopg.connect(sql_conn.replace("postgresql+psycopg", "postgresql")) as conn:
            (deadline_time,) = conn.execute(
                "SELECT d.deadline_time FROM deadline d JOIN dag_run r ON r.id = d.dagrun_id WHERE r.run_id = %s",
                (run_id,),
            ).fetchone() or (None,)
        run_after = datetime.fromisoformat(triggered.json()["run_after"])
        expected = close_deadline(DAG_ID, LEGAL_ENTITY, run_after)
        assert expected is not None
        assert deadline_time == expected + timedelta(seconds=round(shift, 3))

        # The run is still going when the deadline passes: the owner is told.
        _wait("the deadline alert", lambda: smtp_sink.messages, 150, logs)
        message = smtp_sink.messages[0]
        subject = message["Subject"]
        assert subject.startswith(f"[psa-erp-sync] Deadline missed: {DAG_ID} for {LEGAL_ENTITY} by ")
        assert f"(run {run_id})" in subject
        assert message["X-Test-Rcpt"] == "finance-ops-uk@example.com"
        assert message["X-PSA-ERP-Sync-Owner"] == "finance-ops-uk"
        body = message.get_body(("html",)).get_content()
        assert "approved by 18:00 local, in the ERP by 20:00 local on business day +1" in body
        assert (
            "state when the deadline passed: running" in body
            or "state when the deadline passed: queued" in body
        )
        assert len(smtp_sink.messages) == 1

        # Clearing a run of a DAG with these deadlines works (apache/airflow#70368 is avoided).
        cleared = api.post(
            f"/dags/{DAG_ID}/clearTaskInstances",
            json={"dry_run": False, "dag_run_id": run_id, "only_failed": False, "reset_dag_runs": True},
        )
        assert cleared.status_code == 200, cleared.text
        assert [ti["task_id"] for ti in cleared.json()["task_instances"]] == ["slow_post"]
        run = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}").json()
        assert run["state"] in {"queued", "running"}

        control = api.post("/dags/queued_at_control/dagRuns", json={"logical_date": None})
        assert control.status_code == 200, control.text
        control_clear = api.post(
            "/dags/queued_at_control/clearTaskInstances",
            json={"dry_run": False, "dag_run_id": control.json()["dag_run_id"], "only_failed": False},
        )
        # The control: the same clear on a DAG whose deadline uses DAGRUN_QUEUED_AT fails with 500
        # in 3.3 (taskinstance._recalculate_dagrun_queued_at_deadlines: timedelta(seconds=<dict>)).
        # When this starts answering 200, Airflow has fixed #70368.
        assert control_clear.status_code == 500, control_clear.text
