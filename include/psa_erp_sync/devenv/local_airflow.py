"""``make airflow``: a local Airflow with the UI, wired to the simulators and the ODS.

Starts (or reuses) PostgreSQL, keeps the demo database between runs (seeding it on first use),
starts the simulators, then ``airflow standalone`` (API server + UI on ``--port``, scheduler,
DAG processor, triggerer). Ctrl-C stops everything this command started.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from psa_erp_sync.devenv.airflow_env import airflow_env
from psa_erp_sync.devenv.demo import seed
from psa_erp_sync.devenv.stack import LOCAL, ROOT, Stack

log = logging.getLogger("airflow-local")


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
        env = airflow_env(stack, home=LOCAL / "airflow-local")
        env.update(
            {
                "AIRFLOW__API__PORT": str(args.port),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{args.port}/execution/",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            }
        )
        bin_dir = Path(sys.executable).parent
        full_env = {**os.environ, **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        log.info(
            "UI: http://localhost:%d  (user admin; the password is printed by airflow standalone)", args.port
        )
        proc = subprocess.Popen([str(bin_dir / "airflow"), "standalone"], env=full_env, cwd=ROOT)

        def _stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _stop)
        try:
            proc.wait()
        except KeyboardInterrupt:
            log.info("stopping Airflow, the simulators and PostgreSQL")
            proc.send_signal(signal.SIGINT)  # standalone stops its components on SIGINT
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
