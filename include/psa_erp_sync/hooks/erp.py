"""Airflow hook for the ERP (NetSuite SuiteTalk REST shape)."""

from __future__ import annotations

from typing import Any

from psa_erp_sync.hooks.base import HttpSystemHook


class ErpHook(HttpSystemHook):
    """Builds a :class:`~psa_erp_sync.clients.erp.NetSuiteClient` from a connection.

    Connection: host = REST base URL, password = token, extra ``account_id``. The account's
    concurrency limit (shared by all its integrations) is per environment, not per connection.
    """

    conn_name_attr = "erp_conn_id"
    default_conn_name = "erp_default"
    hook_name = "ERP (NetSuite SuiteTalk REST)"

    def __init__(self, erp_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(erp_conn_id, **kwargs)

    def get_client(self, *, timeout: float = 30.0) -> Any:
        from psa_erp_sync.clients.erp import NetSuiteClient

        base_url, token, extra = self.connection_parts()
        return NetSuiteClient(
            base_url=base_url,
            account_id=str(extra.get("account_id", "default")),
            token=token,
            timeout=timeout,
        )

    def max_concurrency(self) -> int:
        """The ERP account's concurrency limit in the current environment (``erp.concurrency`` of
        ``config/environments/<env>.yaml``), for the connection's ``account_id``."""
        from psa_erp_sync.config import erp_concurrency_limit

        _, _, extra = self.connection_parts()
        return erp_concurrency_limit(str(extra.get("account_id", "default")))
