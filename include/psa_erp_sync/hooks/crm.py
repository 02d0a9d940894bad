"""Airflow hook for the CRM (accounts, opportunities, change orders)."""

from __future__ import annotations

from typing import Any

from psa_erp_sync.hooks.base import HttpSystemHook


class CrmHook(HttpSystemHook):
    """Builds a :class:`~psa_erp_sync.clients.crm.CrmClient` from a connection.

    Connection: host = base URL, password = bearer token.
    """

    conn_name_attr = "crm_conn_id"
    default_conn_name = "crm_default"
    hook_name = "CRM"

    def __init__(self, crm_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(crm_conn_id, **kwargs)

    def get_client(self) -> Any:
        from psa_erp_sync.clients.crm import CrmClient

        base_url, token, _ = self.connection_parts()
        return CrmClient(base_url=base_url, token=token)
