"""Airflow hook for SAP S/4HANA (OData V2: timesheets, journal entries, posting periods)."""

from __future__ import annotations

from typing import Any

from psa_erp_sync.hooks.base import HttpSystemHook


class SapHook(HttpSystemHook):
    """Builds a :class:`~psa_erp_sync.clients.sap.S4HanaClient` from a connection.

    Connection: host = the system's API URL; login + password = the communication user of the
    Communication Arrangement (basic authentication), or no login and password = an OAuth 2.0
    bearer token.
    """

    conn_name_attr = "sap_conn_id"
    default_conn_name = "sap_default"
    hook_name = "SAP S/4HANA"

    def __init__(self, sap_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(sap_conn_id, **kwargs)

    def get_client(self, *, timeout: float = 60.0) -> Any:
        from psa_erp_sync.clients.sap import S4HanaClient

        base_url, secret, _ = self.connection_parts()
        login = self.get_connection(self.conn_id).login or ""
        if login:
            return S4HanaClient(base_url=base_url, user=login, password=secret, timeout=timeout)
        return S4HanaClient(base_url=base_url, token=secret, timeout=timeout)
