"""Airflow hook for the PSA (Harvest API v2 shape)."""

from __future__ import annotations

from typing import Any

from psa_erp_sync.hooks.base import HttpSystemHook


class PsaHook(HttpSystemHook):
    """Builds a :class:`~psa_erp_sync.clients.psa.HarvestClient` from a connection.

    Connection: host = base URL, password = personal access token, extra ``account_id``.
    """

    conn_name_attr = "psa_conn_id"
    default_conn_name = "psa_default"
    hook_name = "PSA (Harvest API v2)"

    def __init__(self, psa_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(psa_conn_id, **kwargs)

    def get_client(self) -> Any:
        from psa_erp_sync.clients.psa import HarvestClient

        base_url, token, extra = self.connection_parts()
        if "account_id" not in extra:
            raise ValueError(f"connection {self.conn_id} needs extra 'account_id' (Harvest-Account-Id)")
        return HarvestClient(base_url=base_url, token=token, account_id=str(extra["account_id"]))
