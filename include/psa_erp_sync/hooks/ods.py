"""Airflow hook for the operational data store (PostgreSQL, psycopg 3)."""

from __future__ import annotations

from typing import Any

import psycopg
from airflow.sdk import BaseHook


class OdsHook(BaseHook):
    """Connections to the ODS. Connection: host, port, login, password, schema = database name."""

    conn_name_attr = "ods_conn_id"
    default_conn_name = "ods_default"
    conn_type = "postgres"
    hook_name = "ODS (PostgreSQL)"

    def __init__(self, ods_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ods_conn_id = ods_conn_id

    def _parts(self) -> dict[str, Any]:
        conn = self.get_connection(self.ods_conn_id)
        return {
            "host": conn.host or "127.0.0.1",
            "port": int(conn.port or 5432),
            "user": conn.login or "postgres",
            "password": conn.password or None,
            "dbname": conn.schema or "postgres",
        }

    def dsn(self) -> str:
        parts = {k: v for k, v in self._parts().items() if v is not None}
        return psycopg.conninfo.make_conninfo("", **parts)

    def get_conn(self) -> psycopg.Connection:
        from psa_erp_sync.ods import connections

        return connections.connect(self.dsn(), application_name="psa-erp-sync")

    def openlineage_namespace(self) -> str:
        parts = self._parts()
        return f"postgres://{parts['host']}:{parts['port']}"

    def database(self) -> str:
        return str(self._parts()["dbname"])
