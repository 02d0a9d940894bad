"""Environment for running Airflow locally against the stack: home, metadata DB, connections, lineage.

Connections are passed as ``AIRFLOW_CONN_*`` JSON environment variables (no secrets: the
simulators accept any token). Fernet key and JWT secret are generated once per checkout and
shared by every Airflow process, as Airflow 3 requires.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from devtools.stack import LOCAL, ROOT, Stack


def _secret(path: Path, make: str) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    if make == "fernet":
        from cryptography.fernet import Fernet

        value = Fernet.generate_key().decode()
    else:
        value = secrets.token_urlsafe(32)
    path.write_text(value)
    path.chmod(0o600)
    return value


def airflow_env(
    stack: Stack, *, home: Path | None = None, lineage_file: Path | None = None
) -> dict[str, str]:
    """Environment variables for Airflow processes that use this stack."""
    home = home or LOCAL / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    parts = psycopg_parts(stack.dsn)
    connections = {
        "psa_default": {
            "conn_type": "http",
            "host": stack.url("psa"),
            "password": "local-psa-token",
            "extra": {"account_id": "100001"},
        },
        "crm_default": {"conn_type": "http", "host": stack.url("crm"), "password": "local-crm-token"},
        "erp_default": {
            "conn_type": "http",
            "host": stack.url("erp"),
            "password": "local-erp-token",
            "extra": {"account_id": "TSTDRV100001"},
        },
        "planning_default": {
            "conn_type": "http",
            "host": stack.url("planning"),
            "password": "local-planning-token",
        },
        "workday_default": {
            "conn_type": "http",
            "host": stack.url("workday"),
            "login": "local-workday-client",
            "password": "local-workday-secret",
            "extra": {"tenant": "acme", "refresh_token": "local-workday-refresh-token"},
        },
        "ods_default": {"conn_type": "postgres", **parts},
    }
    if "sap" in stack.simulators:
        connections["sap_default"] = {
            "conn_type": "http",
            "host": stack.url("sap"),
            "login": "PSA_COMM_USER",
            "password": "local-sap-password",
        }
    from psa_erp_sync.config import airflow_environment_variables, load_environment

    # The environment file decides the OpenLineage transport and namespace (dev unless chosen).
    name = os.environ.get("PSA_ERP_SYNC_ENV") or "dev"
    environment = load_environment(name, ROOT / "config")
    settings = airflow_environment_variables(environment, ROOT)
    if lineage_file is not None:  # the demo keeps this run's events beside its report
        settings["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(
            {"type": "file", "log_file_path": str(lineage_file), "append": True}
        )
    transport = json.loads(settings["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    if transport["type"] == "file":
        Path(transport["log_file_path"]).parent.mkdir(parents=True, exist_ok=True)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__FERNET_KEY": _secret(home / ".fernet_key", "fernet"),
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret(home / ".jwt_secret", "token"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__OPENLINEAGE__NAMESPACE": settings["AIRFLOW__OPENLINEAGE__NAMESPACE"],
        "AIRFLOW__OPENLINEAGE__TRANSPORT": settings["AIRFLOW__OPENLINEAGE__TRANSPORT"],
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
        "PSA_ERP_SYNC_CONFIG_DIR": str(ROOT / "config"),
        "PSA_ERP_SYNC_ENV": environment.name,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "include"), os.environ.get("PYTHONPATH", "")])
        ),
    }
    for conn_id, conn in connections.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
    return env


def psycopg_parts(dsn: str) -> dict[str, object]:
    import psycopg

    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return {
        "host": info.get("host") or "127.0.0.1",
        "port": int(info.get("port") or 5432),
        "login": info.get("user") or "postgres",
        "password": info.get("password") or "",
        "schema": info.get("dbname") or "postgres",
    }


def psa_webhook_secret(home: Path) -> str:
    """The local PSA webhook signing secret (generated once per checkout, like the JWT secret)."""
    return _secret(home / ".psa_webhook_secret", "token")
