"""``make airflow``: a local Airflow with the UI, wired to the simulators and the ODS.

Starts (or reuses) PostgreSQL, keeps the demo database between runs (seeding it on first use),
starts the simulators, then ``airflow standalone`` (API server + UI on ``--port``, scheduler,
DAG processor, triggerer). Ctrl-C stops everything this command started.

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
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from psa_erp_sync.devenv.airflow_env import airflow_env, psa_webhook_secret
from psa_erp_sync.devenv.demo import seed
from psa_erp_sync.devenv.stack import LOCAL, ROOT, Stack

log = logging.getLogger("airflow-local")

STREAM_DAG = "time_expense_stream"
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


def _paused(metadata_db: Path, dag_id: str) -> bool | None:
    """The DAG's pause flag in the local (SQLite) metadata DB; None until the DAG is serialized."""
    if not metadata_db.exists():
        return None
    with closing(sqlite3.connect(metadata_db)) as db:
        row = db.execute("SELECT is_paused FROM dag WHERE dag_id = ?", (dag_id,)).fetchone()
    return None if row is None else bool(row[0])


def unpause_when_parsed(
    airflow: Path, env: dict[str, str], metadata_db: Path, dag_id: str, stop: threading.Event
) -> None:
    """``airflow dags unpause`` once the DAG processor has serialized the DAG, until it sticks.

    Also creates the ERP account's pool the posting tasks run in (docs/posting.md), once the
    metadata DB is migrated: without it the scheduler never starts them."""
    from psa_erp_sync.hooks.erp import account_pool

    pool_made = False
    while not stop.wait(5.0):
        try:
            paused = _paused(metadata_db, dag_id)
        except sqlite3.Error:
            continue  # the DB is being migrated or written: try again
        if paused is not None and not pool_made:
            made = subprocess.run(
                [str(airflow), "pools", "set", account_pool(), "2", "ERP account: posting tasks"],
                env=env, capture_output=True, check=False,
            )  # fmt: skip
            pool_made = made.returncode == 0
        if paused is False:
            log.info("%s is active: PSA webhooks now start event-driven runs", dag_id)
            return
        if paused is True:
            subprocess.run(
                [str(airflow), "dags", "unpause", dag_id], env=env, capture_output=True, check=False
            )


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
        ingress_url = f"http://127.0.0.1:{args.port}/ingress/psa/events"
        subscribe_psa_webhook(stack.url("psa"), ingress_url, webhook_secret)
        log.info("PSA webhooks -> %s (until the API server is up, the PSA retries with backoff)", ingress_url)
        bin_dir = Path(sys.executable).parent
        full_env = {**os.environ, **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        log.info(
            "UI: http://localhost:%d  (user admin; the password is printed by airflow standalone)", args.port
        )
        proc = subprocess.Popen([str(bin_dir / "airflow"), "standalone"], env=full_env, cwd=ROOT)
        stop_unpause = threading.Event()
        threading.Thread(
            target=unpause_when_parsed,
            args=(bin_dir / "airflow", full_env, home / "airflow.db", STREAM_DAG, stop_unpause),
            name="unpause-stream",
            daemon=True,
        ).start()

        def _stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _stop)
        try:
            proc.wait()
        except KeyboardInterrupt:
            stop_unpause.set()
            log.info("stopping Airflow, the simulators and PostgreSQL")
            proc.send_signal(signal.SIGINT)  # standalone stops its components on SIGINT
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
