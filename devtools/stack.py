"""The local stack: PostgreSQL (configured or embedded), the ODS migrations, and the simulators.

``Stack`` starts only what is missing and stops only what it started, so it can sit on top of a
developer's own PostgreSQL (``PSA_ERP_SYNC_DSN``) or start the embedded one.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx
import psycopg

from devtools import pgserver
from psa_erp_sync.ods import migrate

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
SIMULATORS = ("psa", "crm", "erp", "planning", "workday")
# Started only when asked for (``Stack(simulators=(*SIMULATORS, "sap"))``, as ``make demo`` does).
OPTIONAL_SIMULATORS = ("sap",)
SIM_PORTS = {"psa": 18101, "crm": 18102, "erp": 18103, "planning": 18104, "sap": 18105, "workday": 18107}


def _with_db(dsn: str, database: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=database)


class Stack:
    """PostgreSQL + ODS database + simulators for the demo and ``make airflow``."""

    def __init__(
        self,
        *,
        database: str = "psa_erp_sync_demo",
        fresh: bool = True,
        port_offset: int = 0,
        simulators: tuple[str, ...] = SIMULATORS,
    ) -> None:
        unknown = set(simulators) - set(SIM_PORTS)
        if unknown:
            raise ValueError(f"unknown simulators: {sorted(unknown)}")
        self.simulators = simulators
        self.database = database
        self.fresh = fresh
        self.ports = {name: port + port_offset for name, port in SIM_PORTS.items()}
        self.server_dsn = ""
        self.dsn = ""
        self._started_pg = False
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = LOCAL / "logs"

    # -- PostgreSQL ---------------------------------------------------------
    def start_postgres(self) -> str:
        configured = os.environ.get("PSA_ERP_SYNC_DSN")
        if configured:
            log.info("using PostgreSQL from PSA_ERP_SYNC_DSN")
            self.server_dsn = configured
        else:
            data = LOCAL / "pg"
            was_running = pgserver.status(data)
            self.server_dsn = pgserver.start(data, port=None)
            self._started_pg = not was_running
            log.info(
                "embedded PostgreSQL %s at %s", "started" if self._started_pg else "already running", data
            )
        with psycopg.connect(self.server_dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if exists and self.fresh:
                conn.execute(f'DROP DATABASE "{self.database}" WITH (FORCE)')
                exists = None
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')
        self.dsn = _with_db(self.server_dsn, self.database)
        applied = migrate.apply(self.dsn)
        log.info("ODS migrations applied: %d", len(applied))
        return self.dsn

    # -- simulators ---------------------------------------------------------
    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start_simulators(self, timeout_s: float = 60.0) -> dict[str, str]:
        self.logs.mkdir(parents=True, exist_ok=True)
        for name in self.simulators:
            if self._healthy(name):
                raise RuntimeError(
                    f"port {self.ports[name]} already serves a {name} simulator; stop it (or another `make demo`) first"
                )
            out = (self.logs / f"sim-{name}.log").open("ab")
            self._procs[name] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "simulators.run",
                    name,
                    "--port",
                    str(self.ports[name]),
                    "--dsn",
                    self.dsn,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        deadline = time.monotonic() + timeout_s
        for name in self.simulators:
            while not self._healthy(name):
                if self._procs[name].poll() is not None:
                    raise RuntimeError(f"simulator {name} exited; see {self.logs / f'sim-{name}.log'}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"simulator {name} did not become healthy")
                time.sleep(0.2)
        return {name: self.url(name) for name in self.simulators}

    def pid(self, name: str) -> int | None:
        """Process id of a simulator this stack started (None when it did not start it)."""
        proc = self._procs.get(name)
        return proc.pid if proc is not None else None

    def _healthy(self, name: str) -> bool:
        try:
            return httpx.get(f"{self.url(name)}/admin/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    # -- lifecycle ----------------------------------------------------------
    def stop(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._procs.clear()
        if self._started_pg:
            pgserver.stop(LOCAL / "pg")
            self._started_pg = False

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
