"""docker-compose.yaml's production topology as local processes, for the distributed e2e test.

Docker does not run here, so the e2e starts what compose declares, one process per service:
PostgreSQL (the embedded server, initialised the way the ``postgres`` image does it: superuser
with a password, scram-sha-256 for every connection, then ``compose/postgres-init.sh``), Redis
(``redis-server`` on a free port), the four simulators, the ``airflow-init`` steps, and the
Airflow services ``api-server``, ``scheduler``, ``dag-processor``, ``triggerer`` and two
``celery worker`` processes. Every Airflow process gets compose's ``x-airflow-common-env``
(secrets substituted, service host names replaced by loopback ports, ``/opt/airflow`` by a work
directory) plus what the image itself provides (``AIRFLOW_HOME``, DAG and plugin folders, config
directory) and the few test settings listed in :data:`TEST_SETTINGS`.

A small HTTP receiver stands in for Marquez, so the OpenLineage HTTP transport compose declares
is the one the tasks use.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
INIT_SCRIPT = ROOT / "compose" / "postgres-init.sh"
BIN = Path(sys.executable).parent

# Service -> the port it listens on inside compose (host names are replaced, ports remapped).
COMPOSE_PORTS = {
    "postgres": 5432,
    "redis": 6379,
    "airflow-apiserver": 8080,
    "sim-psa": 18101,
    "sim-crm": 18102,
    "sim-erp": 18103,
    "sim-planning": 18104,
    "sim-workday": 18107,
    "marquez": 5000,
}
SIMULATORS = ("psa", "crm", "erp", "planning", "workday")
# The PostgreSQL logins the compose file creates: (role, the .env variable of its password, database).
LOGINS = {
    "meta": ("airflow", "AIRFLOW_DB_PASSWORD", "airflow"),
    "ods": ("ods", "ODS_PASSWORD", "ods"),
    "ingress": ("ods_ingress", "ODS_INGRESS_PASSWORD", "ods"),
    "sim": ("simulators", "SIMULATORS_DB_PASSWORD", "simulators"),
}

# What the e2e changes on top of compose, and why: a killed worker's task must be detected within
# seconds, not compose's two minutes; one API worker on a 2-core machine.
TEST_SETTINGS = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "15",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
    "AIRFLOW__API__WORKERS": "1",
    # A task message that died with its worker before the task started is re-sent within a minute.
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
}

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[?-])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class Timeline:
    """Progress lines with elapsed seconds, flushed at once (a CI log shows where the run is)."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str, *args: Any) -> None:
        text = message % args if args else message
        sys.stderr.write(f"[e2e {time.monotonic() - self.started:6.1f}s] {text}\n")
        sys.stderr.flush()


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose variable substitution: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3)
        found = variables.get(name)
        if op in (":?", "?") and (found is None or (op == ":?" and found == "")):
            raise KeyError(f"compose requires {name}: {arg}")
        if op in (":-", "-") and (found is None or (op == ":-" and found == "")):
            return arg or ""
        return found or ""

    return _VAR.sub(sub, value)


def load_compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def compose_airflow_env(variables: Mapping[str, str]) -> dict[str, str]:
    """The common Airflow environment of docker-compose.yaml with ``variables`` substituted."""
    common = load_compose()["x-airflow-common-env"]
    return {key: interpolate(str(value), variables) for key, value in common.items()}


def compose_pools() -> list[list[str]]:
    """The ``airflow pools set NAME SLOTS DESCRIPTION`` calls of compose's ``airflow-init``."""
    import shlex

    script = " ".join(str(part) for part in load_compose()["services"]["airflow-init"]["command"])
    return [
        shlex.split(match.group(1))[:3]
        for match in re.finditer(r"airflow pools set ((?:[^&;\n\"]|\"[^\"]*\")+)", script)
    ]


def localize(env: Mapping[str, str], ports: Mapping[str, int], opt_airflow: Path) -> dict[str, str]:
    """Compose service addresses -> 127.0.0.1 and this run's ports; ``/opt/airflow`` -> a work dir.

    Handles ``host:port`` inside URLs and DSNs and the separate ``host`` / ``port`` fields of
    JSON connections (``AIRFLOW_CONN_*``).
    """
    out: dict[str, str] = {}
    for key, value in env.items():
        if key.startswith("AIRFLOW_CONN_") and value.lstrip().startswith("{"):
            conn = json.loads(value)
            host = str(conn.get("host", ""))
            if host in ports:
                conn["host"] = "127.0.0.1"
                conn["port"] = ports[host]
            value = json.dumps(conn)
        for service, inner in COMPOSE_PORTS.items():
            value = re.sub(
                rf"(?<![\w.-]){re.escape(service)}:{inner}(?!\d)", f"127.0.0.1:{ports[service]}", value
            )
        out[key] = value.replace("/opt/airflow", str(opt_airflow))
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LineageReceiver:
    """Stands in for Marquez: accepts OpenLineage events on ``POST /api/v1/lineage`` and counts them."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.rstrip("/") == "/api/v1/lineage":
                    with contextlib.suppress(ValueError):
                        receiver.events.append(json.loads(body))
                    self.send_response(201)
                else:
                    self.send_response(404)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="lineage", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Topology:
    """The processes of docker-compose.yaml on loopback, started and stopped together."""

    def __init__(self, work: Path, *, timeline: Timeline | None = None) -> None:
        self.work = work
        self.log = timeline or Timeline()
        self.logs = work / "logs"
        self.opt_airflow = work / "opt-airflow"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        # Every loopback port up front: the init step derives the environment while services start.
        self.ports: dict[str, int] = {
            service: free_port() for service in COMPOSE_PORTS if service not in ("postgres", "marquez")
        }
        self.pg_data = work / "pg"
        self.pg_started = False
        self.lineage: LineageReceiver | None = None
        token = secrets.token_hex
        from cryptography.fernet import Fernet

        # What `.env` holds for compose: one value per ${VAR} the file requires.
        self.variables = {
            "AIRFLOW_FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW_JWT_SECRET": token(24),
            "AIRFLOW_DB_PASSWORD": token(12),
            "ODS_PASSWORD": token(12),
            "ODS_INGRESS_PASSWORD": token(12),
            "SIMULATORS_DB_PASSWORD": token(12),
            "MARQUEZ_DB_PASSWORD": token(12),
            "AIRFLOW_ADMIN_PASSWORD": token(12),
            "PSA_WEBHOOK_SECRET": token(16),
            "ERP_WEBHOOK_SECRET": token(16),
        }
        self.env: dict[str, str] = {}

    # -- helpers -------------------------------------------------------------------------------
    def dsn(self, role: str, password: str | None, database: str) -> str:
        parts = {"host": "127.0.0.1", "port": self.ports["postgres"], "user": role, "dbname": database}
        if password is not None:
            parts["password"] = password
        return psycopg.conninfo.make_conninfo("", **parts)

    def login_dsn(self, login: str) -> str:
        """The DSN of one of the topology's PostgreSQL logins (``LOGINS``), with its password."""
        role, password_variable, database = LOGINS[login]
        return self.dsn(role, self.variables[password_variable], database)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        out = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv, env=dict(env), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None and not name.endswith("(killed)"):
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited ({proc.returncode}); log tail:\n{tail}")

    # -- PostgreSQL ------------------------------------------------------------------------------
    def start_postgres(self) -> None:
        """A fresh server, initialised as the ``postgres`` image does, then compose's init script.

        The embedded server already authenticates every connection with scram-sha-256 (its
        superuser's password is generated); the image's ``POSTGRES_USER`` / ``POSTGRES_PASSWORD`` /
        ``POSTGRES_DB`` are created on top of it."""
        from devtools import pgserver

        pgserver.destroy(self.pg_data)
        server = pgserver.start(self.pg_data, port=None)
        self.pg_started = True
        self.ports["postgres"] = int(psycopg.conninfo.conninfo_to_dict(server)["port"] or 5432)
        airflow_pw = self.variables["AIRFLOW_DB_PASSWORD"]
        with psycopg.connect(server, autocommit=True) as conn:
            # POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB of the compose service.
            conn.execute(
                psycopg.sql.SQL("CREATE ROLE airflow SUPERUSER LOGIN PASSWORD {}").format(
                    psycopg.sql.Literal(airflow_pw)
                )
            )
            conn.execute("CREATE DATABASE airflow OWNER airflow")
        psql = shutil.which("psql") or str(pgserver._bin("psql"))
        env = {
            **os.environ,
            "PATH": f"{Path(psql).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "POSTGRES_USER": "airflow",
            "POSTGRES_DB": "airflow",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.ports["postgres"]),
            "PGPASSWORD": airflow_pw,
            **self.variables,
        }
        with (self.logs / "postgres-init.log").open("wb") as out:
            subprocess.run(
                ["bash", str(INIT_SCRIPT)], env=env, stdout=out, stderr=subprocess.STDOUT, check=True
            )

    # -- Redis --------------------------------------------------------------------------------------
    def start_redis(self, redis_server: str) -> None:
        port = self.ports["redis"]
        self._spawn(
            "redis",
            [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            os.environ,
        )
        import redis

        deadline = time.monotonic() + 20
        while True:
            try:
                if redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping():
                    return
            except redis.exceptions.ConnectionError:
                pass
            self.alive()
            if time.monotonic() > deadline:
                raise TimeoutError("redis-server did not answer PING")
            time.sleep(0.1)

    # -- simulators ----------------------------------------------------------------------------------
    def start_simulators(self) -> None:
        sim_env = load_compose()["x-simulator"]["environment"]
        env = {
            **os.environ,
            **localize(
                {k: interpolate(str(v), self.variables) for k, v in sim_env.items()},
                self._all_ports(),
                self.opt_airflow,
            ),
        }
        for name in SIMULATORS:
            port = self.ports[f"sim-{name}"]
            self._spawn(
                f"sim-{name}",
                [sys.executable, "-m", "simulators.run", name, "--port", str(port)],
                env,
            )
        deadline = time.monotonic() + 90
        for name in SIMULATORS:
            while True:
                try:
                    if httpx.get(f"{self.url(f'sim-{name}')}/admin/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                self.alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"simulator {name} did not become healthy")
                time.sleep(0.2)

    def _all_ports(self) -> dict[str, int]:
        return {service: self.ports.get(service, 0) for service in COMPOSE_PORTS}

    # -- Airflow ---------------------------------------------------------------------------------------
    def airflow_env(self) -> dict[str, str]:
        """compose's common environment, localized, plus what the image provides and the test settings."""
        if self.lineage is None:
            self.lineage = LineageReceiver()
        self.ports["marquez"] = self.lineage.port
        env = localize(compose_airflow_env(self.variables), self._all_ports(), self.opt_airflow)
        image = {  # the Dockerfile's layout: AIRFLOW_HOME, dags, plugins, config, the package
            "AIRFLOW_HOME": str(self.opt_airflow),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "PSA_ERP_SYNC_CONFIG_DIR": str(ROOT / "config"),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT)]),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW__API__PORT": str(self.ports["airflow-apiserver"]),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PSA_ERP_SYNC"))}
        self.env = {**base, **env, **image, **TEST_SETTINGS}
        return self.env

    def init_airflow(self) -> None:
        """What compose's ``airflow-init`` does: admin password file, ``airflow db migrate``, ODS migrations."""
        env = self.airflow_env()
        (self.opt_airflow / "config").mkdir(parents=True, exist_ok=True)
        (self.opt_airflow / "logs").mkdir(parents=True, exist_ok=True)
        passwords = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
        passwords.write_text(json.dumps({"admin": self.variables["AIRFLOW_ADMIN_PASSWORD"]}) + "\n")
        passwords.chmod(0o600)
        with (self.logs / "airflow-init.log").open("wb") as out:

            def step(argv: list[str], timeout: float) -> None:
                subprocess.run(
                    argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, check=True, timeout=timeout
                )

            step([str(BIN / "airflow"), "db", "migrate"], timeout=600)
            for pool in compose_pools():  # the pools compose's init creates (ERP account budget)
                step([str(BIN / "airflow"), "pools", "set", *pool], timeout=300)
            step(
                [sys.executable, "-m", "psa_erp_sync.ods.migrate", "--dsn", self.login_dsn("ods")],
                timeout=300,
            )

    def start_airflow(self, workers: tuple[str, ...] = ("worker-1", "worker-2")) -> None:
        """compose's Airflow services: each service's ``command`` as a process."""
        services = load_compose()["services"]
        for service in (
            "airflow-apiserver",
            "airflow-scheduler",
            "airflow-dag-processor",
            "airflow-triggerer",
        ):
            command = [str(c) for c in services[service]["command"]]
            self._spawn(service, [str(BIN / "airflow"), *command], self.env)
        for name in workers:
            self.start_worker(name)

    def start_worker(self, name: str) -> None:
        """compose's ``airflow-worker`` service as one container would run it, named ``name``."""
        compose = load_compose()
        service = compose["services"]["airflow-worker"]
        own_env = {
            k: interpolate(str(v), self.variables)
            for k, v in service["environment"].items()
            if k not in compose["x-airflow-common-env"]
        }
        env = {
            **self.env,
            **own_env,
            # What a container gives each worker: its own host name (and its own log server).
            "E2E_CONTAINER_HOSTNAME": name,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.e2e.hostname.container_hostname",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }
        command = [str(c) for c in service["command"]]
        self._spawn(
            name,
            [str(BIN / "airflow"), *command, "--celery-hostname", f"{name}@e2e", "--concurrency", "4"],
            env,
        )

    def api(self) -> httpx.Client:
        """An authenticated client of the API server (SimpleAuthManager admin, as compose creates it)."""
        base = self.url("airflow-apiserver")
        response = httpx.post(
            f"{base}/auth/token",
            json={"username": "admin", "password": self.variables["AIRFLOW_ADMIN_PASSWORD"]},
            timeout=30,
        )
        response.raise_for_status()
        token = response.json()["access_token"]
        return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def wait_api(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive()
            try:
                if httpx.get(f"{self.url('airflow-apiserver')}/api/v2/version", timeout=3).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        raise TimeoutError("the API server did not answer /api/v2/version")

    def wait_workers(self, names: tuple[str, ...], timeout: float = 120) -> None:
        """Until every worker answers a Celery ping (compose's worker healthcheck)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive()
            proc = subprocess.run(
                [
                    str(BIN / "celery"),
                    "--app",
                    "airflow.providers.celery.executors.celery_executor.app",
                    "inspect",
                    "ping",
                    "--timeout",
                    "3",
                ],
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
                cwd=ROOT,
            )
            if all(f"{name}@e2e" in proc.stdout for name in names):
                return
            time.sleep(2.0)
        raise TimeoutError(f"Celery workers {names} did not answer a ping")

    # -- faults -------------------------------------------------------------------------------------
    def kill_tree(self, name: str) -> list[int]:
        """SIGKILL a process and every descendant (Celery pool children, task supervisors, tasks)."""
        import psutil

        proc = self.procs[name]
        root = psutil.Process(proc.pid)
        victims = [root, *root.children(recursive=True)]
        for victim in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.send_signal(signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self.procs[f"{name} (killed)"] = self.procs.pop(name)
        return [v.pid for v in victims]

    # -- lifecycle -------------------------------------------------------------------------------------
    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.procs.clear()
        if self.lineage is not None:
            self.lineage.stop()
            self.lineage = None
        if self.pg_started:
            from devtools import pgserver

            pgserver.stop(self.pg_data)
            self.pg_started = False
