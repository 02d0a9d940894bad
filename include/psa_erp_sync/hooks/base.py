"""Shared connection handling for the HTTP systems' hooks."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook


def base_url_of(host: str | None, schema: str | None, port: int | None) -> str:
    """``host`` may carry a scheme (``http://127.0.0.1:18101``) or not (``api.example.com``)."""
    if not host:
        raise ValueError("the connection has no host")
    if "://" in host:
        parts = urlsplit(host)
        netloc = parts.netloc if parts.port or not port else f"{parts.netloc}:{port}"
        return f"{parts.scheme}://{netloc}{parts.path}".rstrip("/")
    scheme = schema or "https"
    return f"{scheme}://{host}{f':{port}' if port else ''}".rstrip("/")


class HttpSystemHook(BaseHook):
    """A hook whose connection is a base URL plus a bearer token (password) and extras."""

    conn_type = "http"

    def __init__(self, conn_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def connection_parts(self) -> tuple[str, str, dict[str, Any]]:
        conn = self.get_connection(self.conn_id)
        if not conn.password:
            raise ValueError(f"connection {self.conn_id} has no token (password)")
        return base_url_of(conn.host, conn.schema, conn.port), conn.password, dict(conn.extra_dejson)

    def openlineage_namespace(self) -> str:
        """OpenLineage dataset namespace of the system: ``scheme://host[:port]`` (docs/lineage.md)."""
        from psa_erp_sync.lineage.naming import http_namespace

        conn = self.get_connection(self.conn_id)
        return http_namespace(base_url_of(conn.host, conn.schema, conn.port))
