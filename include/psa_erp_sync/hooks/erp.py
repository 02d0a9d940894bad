"""Airflow hook for the ERP (NetSuite SuiteTalk REST shape)."""

from __future__ import annotations

from typing import Any

from psa_erp_sync.hooks.base import HttpSystemHook


class ErpHook(HttpSystemHook):
    """Builds a :class:`~psa_erp_sync.clients.erp.NetSuiteClient` from a connection.

    Connection: host = REST base URL, password = token, extra ``account_id``. The account's
    concurrency limit (shared by all its integrations) is per environment, not per connection
    (:func:`psa_erp_sync.posting.budget.account_limit`). One connection per ERP account: its posting
    tasks run in the Airflow pool :func:`account_pool` names.
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
            concurrency_limit=self.max_concurrency(),
        )

    def adapter(self, client: Any) -> Any:
        """The posting engine's adapter over ``client`` (:class:`~psa_erp_sync.posting.adapter.NetSuiteAdapter`)."""
        from psa_erp_sync.posting.adapter import adapter_for

        return adapter_for("netsuite", client)

    def max_concurrency(self) -> int:
        """The account's limit of requests in flight in the current environment."""
        from psa_erp_sync.posting.budget import account_limit

        _, _, extra = self.connection_parts()
        return account_limit(extra)


def account_pool(erp_conn_id: str = ErpHook.default_conn_name) -> str:
    """The Airflow pool of the posting tasks of the ERP account behind ``erp_conn_id``.

    Named after the connection, not the account id inside it: DAG files are parsed without reading
    connections, and each ERP account has exactly one connection. The platform team creates it once
    per account (docs/posting.md): ``airflow pools set erp_account__erp_default 4 "..."``.
    """
    return f"erp_account__{erp_conn_id}"
