"""Airflow as separate processes for the console's end-to-end browser test: a fresh PostgreSQL
metadata database, ``airflow dags reserialize`` of the given DAG files, a ``scheduler`` with the
LocalExecutor (tasks run in its worker processes and reach the api-server's execution API) and an
``api-server`` with the plugin. Every process is started in a session of its own and every
process group is stopped on exit, pass or fail (SIGTERM to all, SIGKILL after 5 s: the metadata
database is dropped anyway).

The same shape as ``tests/notifications/test_deadline_alerts.py`` (which adds a triggerer)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.conftest import _server_dsn, _with_database, free_port

BIN = Path(sys.executable).parent


@dataclass
class RunningAirflow:
    base_url: str
    logs: list[Path] = field(default_factory=list)

    def tails(self, chars: int = 2500) -> str:
        """The end of every component's log, for a failure message."""
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in self.logs if p.exists()
        )


@contextmanager
def metadata_db(prefix: str) -> Iterator[str]:
    """A new PostgreSQL database on the test server; yields its SQLAlchemy URL, dropped on exit."""
    server = _server_dsn()
    name = f"{prefix}_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(_with_database(server, name))
    auth = str(info.get("user", "postgres")) + (f":{info['password']}" if info.get("password") else "")
    try:
        yield f"postgresql+psycopg://{auth}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Processes:
    """``airflow`` commands, each in a session (process group) of its own, stopped together."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("w") as out:
            proc = subprocess.Popen(
                [str(BIN / "airflow"), *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def stop(self, grace_s: float) -> None:
        """SIGTERM to every group at once, SIGKILL to what is left after ``grace_s`` (and to any
        worker that outlived its parent: a scheduler's LocalExecutor workers are in its group)."""
        for proc in self.procs:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        end = time.monotonic() + grace_s
        for proc in self.procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, end - time.monotonic()))
        for proc in self.procs:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/execution/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(what: str, check: Callable[[], Any], timeout: float, airflow: RunningAirflow) -> Any:
    """Poll ``check`` every half second until it returns something truthy; fail naming ``what``
    with the components' log tails."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if result := check():
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{airflow.tails()}")


@contextmanager
def airflow_with_scheduler(
    dag_files: list[Path], env: dict[str, str], work: Path
) -> Iterator[RunningAirflow]:
    """Migrate a fresh metadata DB, then side by side: serialize ``dag_files`` (copied into a DAG
    folder of their own), the scheduler (LocalExecutor) and the api-server. Yields once the
    api-server answers and the DAGs are serialized. ``env`` is added to ``os.environ`` for every
    process (connections, auth manager users, secrets)."""
    dags = work / "dags"
    dags.mkdir(parents=True)
    for path in dag_files:
        shutil.copy(path, dags / path.name)
    logs = {n: work / f"{n}.log" for n in ("migrate", "reserialize", "scheduler", "api-server")}
    running = RunningAirflow(base_url="", logs=list(logs.values()))
    with ExitStack() as stack:
        port = free_port()
        full = {
            **os.environ,
            **env,
            "AIRFLOW_HOME": str(work / "airflow"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": stack.enter_context(metadata_db("pes_af_console")),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        }
        with logs["migrate"].open("w") as out:
            done = subprocess.run(
                [str(BIN / "airflow"), "db", "migrate"],
                env=full,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=300,
            )
        assert done.returncode == 0, logs["migrate"].read_text()[-3000:]
        procs = Processes(full)
        # The metadata DB is dropped afterwards: nothing needs to wind down gracefully.
        stack.callback(procs.stop, 5.0)
        reserialize = procs.start(["dags", "reserialize"], logs["reserialize"])
        procs.start(["scheduler"], logs["scheduler"])
        api = procs.start(["api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"], logs["api-server"])
        running.base_url = f"http://127.0.0.1:{port}"
        wait_for("the api-server", lambda: api.poll() is not None or _healthy(running.base_url), 240, running)
        assert api.poll() is None, f"the api-server exited\n{running.tails()}"
        assert reserialize.wait(timeout=180) == 0, logs["reserialize"].read_text()[-3000:]
        yield running
