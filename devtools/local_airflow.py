"""``make airflow``: a local Airflow with the UI, wired to the simulators and the ODS.

Starts (or reuses) PostgreSQL, keeps the demo database between runs (seeding it on first use),
starts the simulators, then ``airflow standalone`` (API server + UI on ``--port``, scheduler,
DAG processor, triggerer). Ctrl-C stops everything this command started.

It starts as a living system, not an empty one: once the API server answers, every DAG is
unpaused and gets a first run (the replay DAG a dry run), the ERP account's pool exists, and a
local mailbox (an SMTP server writing `.local/airflow-local/mail/*.eml`) receives the owner
digests (docs/operations.md). The UI address, the login and the mailbox are printed in one block
at the end of start-up.

The stream path runs too: the PSA simulator is subscribed to the webhook ingress the plugin
mounts on the API server (``/ingress/psa/events``, signed with a per-checkout secret held in the
``psa_webhook`` connection), and ``time_expense_stream`` is unpaused once Airflow has parsed it,
so an approval in the PSA (``POST :18101/admin/time_entries/{id}/approve``) reaches the ERP
through the inbox, the ``AssetWatcher`` and an event-driven run. See docs/streaming.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from devtools.airflow_env import airflow_env, psa_webhook_secret
from devtools.demo import seed
from devtools.stack import LOCAL, ROOT, Stack

log = logging.getLogger("airflow-local")

WEBHOOK_EVENTS = [
    "time_entry.approved",
    "time_entry.updated",
    "time_entry.unapproved",
    "time_entry.deleted",
    "expense.approved",
]


def subscribe_psa_webhook(psa_url: str, ingress_url: str, secret: str) -> int:
    """Register (once) the PSA's webhook to our ingress; keep its secret current. Returns its id."""
    with httpx.Client(base_url=psa_url, timeout=30) as http:
        hooks = http.get("/admin/webhooks").raise_for_status().json()["webhooks"]
        for hook in hooks:
            if hook["url"] == ingress_url:
                http.patch(
                    f"/admin/webhooks/{hook['id']}",
                    json={"secret": secret, "events": WEBHOOK_EVENTS, "is_active": True},
                ).raise_for_status()
                return int(hook["id"])
        created = http.post(
            "/admin/webhooks", json={"url": ingress_url, "secret": secret, "events": WEBHOOK_EVENTS}
        )
        return int(created.raise_for_status().json()["id"])


LOGIN_USER = "admin"
# Manual first runs, in this order (master data before the postings that need it); every other
# DAG in dags/ is unpaused and triggered after these. The replay DAG's first run is a dry run.
FIRST_RUNS = ["master_data_sync", "project_setup", "time_expense_posting", "revenue_forecast_refresh"]
FIRST_RUN_CONF = {"dead_letter_replay": {"dry_run": True}}


def login_password(home: Path) -> tuple[Path, str]:
    """The local UI login's password file (SimpleAuthManager format) and password, generated once
    per checkout and kept beside the metadata DB (mode 0600)."""
    import secrets

    path = home / "simple_auth_manager_passwords.json"
    if path.exists():
        password = json.loads(path.read_text()).get(LOGIN_USER)
        if password:
            return path, str(password)
    password = secrets.token_urlsafe(12)
    path.write_text(json.dumps({LOGIN_USER: password}))
    path.chmod(0o600)
    return path, password


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mailbox:
    """A local SMTP server (aiosmtpd) that writes every message it receives to ``directory``."""

    def __init__(self, directory: Path, port: int) -> None:
        from aiosmtpd.controller import Controller

        self.directory = directory
        self.port = port
        directory.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(self, hostname="127.0.0.1", port=port)

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        (self.directory / f"{stamp}.eml").write_bytes(envelope.content)
        return "250 OK"

    def connection(self) -> str:
        extra = {"disable_ssl": True, "disable_tls": True, "timeout": 10, "retry_limit": 1}
        return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": self.port, "extra": extra})

    def __enter__(self) -> Mailbox:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


def dag_ids_in_repo() -> list[str]:
    """The DAG ids of dags/ (by file name: one DAG per file, named like its file), first runs first."""
    ids = sorted(p.stem for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
    return [d for d in FIRST_RUNS if d in ids] + [d for d in ids if d not in FIRST_RUNS]


def bring_to_life(
    base_url: str,
    *,
    user: str,
    password: str,
    dag_ids: list[str],
    pool: tuple[str, int] | None = None,
    stop: threading.Event | None = None,
    timeout_s: float = 900.0,
) -> dict[str, str]:
    """Through the REST API: wait for each DAG to be parsed, unpause it and, unless it has run
    before, trigger its first run; create the ERP account's pool. Returns per DAG what was done
    ("triggered <run id>", "has runs", or why not)."""
    import time

    stop = stop or threading.Event()
    deadline = time.monotonic() + timeout_s
    done: dict[str, str] = {}
    with httpx.Client(base_url=base_url, timeout=30) as http:
        token = None
        while token is None:
            try:
                answer = http.post("/auth/token", json={"username": user, "password": password})
                if answer.status_code in (200, 201):
                    token = answer.json()["access_token"]
                    break
            except httpx.HTTPError:
                pass
            if stop.wait(2.0) or time.monotonic() > deadline:
                return {d: "the API server did not answer" for d in dag_ids}
        http.headers["Authorization"] = f"Bearer {token}"
        if pool is not None:
            name, slots = pool
            if http.get(f"/api/v2/pools/{name}").status_code == 404:
                http.post(
                    "/api/v2/pools",
                    json={"name": name, "slots": slots, "description": "ERP account: posting tasks"},
                ).raise_for_status()
        for dag_id in dag_ids:
            while http.get(f"/api/v2/dags/{dag_id}").status_code == 404:  # not parsed yet
                if stop.wait(3.0) or time.monotonic() > deadline:
                    done[dag_id] = "not parsed in time"
                    break
            if dag_id in done:
                continue
            http.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
            runs = http.get(f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 1}).raise_for_status().json()
            if runs.get("total_entries", 0):
                done[dag_id] = "has runs"
                continue
            triggered = http.post(
                f"/api/v2/dags/{dag_id}/dagRuns",
                json={"logical_date": None, "conf": FIRST_RUN_CONF.get(dag_id, {})},
            ).raise_for_status()
            done[dag_id] = f"triggered {triggered.json()['dag_run_id']}"
            log.info("%s: unpaused, first run %s", dag_id, triggered.json()["dag_run_id"])
    return done


def print_welcome(port: int, password: str, mailbox: Path, done: dict[str, str]) -> None:
    """One block at the end of start-up: where the UI is, how to log in, what is running."""
    lines = [
        "",
        "=" * 72,
        f"  Airflow UI      http://localhost:{port}",
        f"  Login           {LOGIN_USER} / {password}",
        f"  Exception queue http://localhost:{port}/psa-erp-sync/exceptions/summary",
        f"  Owner digests   {mailbox}/*.eml",
        "  DAGs            " + ", ".join(f"{d} ({what})" for d, what in done.items()),
        "  Stop            Ctrl-C",
        "=" * 72,
        "",
    ]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--reseed", action="store_true", help="drop the local database and seed a new month")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    with Stack(database="psa_erp_sync_local", fresh=args.reseed) as stack:
        dsn = stack.start_postgres()
        stack.start_simulators()
        with psycopg.connect(dsn) as conn:
            seeded = conn.execute("SELECT count(*) FROM sim_psa.time_entries").fetchone()
        if not seeded or not seeded[0]:
            log.info("seeding the default firm (first start)")
            seed(stack, seed_value=42, consultants=200, today=datetime.now(UTC))
        home = LOCAL / "airflow-local"
        env = airflow_env(stack, home=home)
        webhook_secret = psa_webhook_secret(home)
        env.update(
            {
                "AIRFLOW__API__PORT": str(args.port),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{args.port}/execution/",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW_CONN_PSA_WEBHOOK": json.dumps({"conn_type": "generic", "password": webhook_secret}),
            }
        )
        passwords, password = login_password(home)
        env.update(
            {
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{LOGIN_USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            }
        )
        mailbox = Mailbox(home / "mail", free_port())
        env["AIRFLOW_CONN_SMTP_DEFAULT"] = mailbox.connection()
        ingress_url = f"http://127.0.0.1:{args.port}/ingress/psa/events"
        subscribe_psa_webhook(stack.url("psa"), ingress_url, webhook_secret)
        log.info("PSA webhooks -> %s (until the API server is up, the PSA retries with backoff)", ingress_url)
        bin_dir = Path(sys.executable).parent
        full_env = {**os.environ, **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        mailbox.__enter__()
        proc = subprocess.Popen([str(bin_dir / "airflow"), "standalone"], env=full_env, cwd=ROOT)
        stop_unpause = threading.Event()

        def _come_alive() -> None:
            from psa_erp_sync.hooks.erp import account_pool

            done = bring_to_life(
                f"http://127.0.0.1:{args.port}",
                user=LOGIN_USER,
                password=password,
                dag_ids=dag_ids_in_repo(),
                pool=(account_pool(), 2),
                stop=stop_unpause,
            )
            print_welcome(args.port, password, mailbox.directory, done)

        threading.Thread(target=_come_alive, name="bring-to-life", daemon=True).start()

        def _stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _stop)
        try:
            proc.wait()
        except KeyboardInterrupt:
            stop_unpause.set()
            mailbox.__exit__()
            log.info("stopping Airflow, the simulators and PostgreSQL")
            proc.send_signal(signal.SIGINT)  # standalone stops its components on SIGINT
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
