"""Airflow hook for Workday HR (REST workers, RaaS reports, OAuth2 refresh-token auth)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from psa_erp_sync.hooks.base import base_url_of


class WorkdayHook(BaseHook):
    """Builds a :class:`~psa_erp_sync.clients.workday.WorkdayClient` from a connection.

    Connection: host = Workday base URL, login = API client id, password = API client secret,
    extra ``tenant``, ``refresh_token`` (the integration system user's; a secret: keep it in the
    secrets backend) and optional ``report_owner`` (owner of the cost-rate custom report).
    """

    conn_name_attr = "workday_conn_id"
    default_conn_name = "workday_default"
    conn_type = "http"
    hook_name = "Workday HR"

    def __init__(self, workday_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = workday_conn_id

    def get_client(self, *, timeout: float = 30.0) -> Any:
        from psa_erp_sync.clients.workday import WorkdayClient

        conn = self.get_connection(self.conn_id)
        extra = dict(conn.extra_dejson)
        missing = [k for k in ("tenant", "refresh_token") if not extra.get(k)]
        if missing or not conn.login or not conn.password:
            raise ValueError(
                f"connection {self.conn_id} needs login (client id), password (client secret) and extra {missing or ''}"
            )
        kwargs: dict[str, Any] = {}
        if extra.get("report_owner"):
            kwargs["report_owner"] = str(extra["report_owner"])
        return WorkdayClient(
            base_url=base_url_of(conn.host, conn.schema, conn.port),
            tenant=str(extra["tenant"]),
            client_id=conn.login,
            client_secret=conn.password,
            refresh_token=str(extra["refresh_token"]),
            timeout=timeout,
            **kwargs,
        )

    def openlineage_namespace(self) -> str:
        """OpenLineage dataset namespace of Workday: ``scheme://host[:port]`` (docs/lineage.md)."""
        from psa_erp_sync.lineage.naming import http_namespace

        conn = self.get_connection(self.conn_id)
        return http_namespace(base_url_of(conn.host, conn.schema, conn.port))
