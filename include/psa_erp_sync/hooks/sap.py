"""Airflow hook for SAP S/4HANA (OData V2: timesheets, journal entries, posting periods)."""

from __future__ import annotations

from typing import Any

from psa_erp_sync.hooks.base import HttpSystemHook


class SapHook(HttpSystemHook):
    """Builds a :class:`~psa_erp_sync.clients.sap.S4HanaClient` from a connection.

    Connection: host = the system's API URL; login + password = the communication user of the
    Communication Arrangement (basic authentication), or no login and password = an OAuth 2.0
    bearer token. Extra: the mapping (:meth:`sap_mapping`), and optionally ``account_id`` (the SAP
    account's name; default ``sap:<host[:port]>[/<sap_client>]``, :meth:`account_id`), whose limit of
    requests in flight is ``erp.concurrency`` of the environment, like a NetSuite account's.
    """

    conn_name_attr = "sap_conn_id"
    default_conn_name = "sap_default"
    hook_name = "SAP S/4HANA"

    def __init__(self, sap_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(sap_conn_id, **kwargs)

    def get_client(self, *, timeout: float = 60.0) -> Any:
        """A new :class:`~psa_erp_sync.clients.sap.S4HanaClient` (close it, or use it in ``with``)."""
        from psa_erp_sync.clients.sap import S4HanaClient

        base_url, secret, _ = self.connection_parts()
        login = self.get_connection(self.conn_id).login or ""
        account, limit = self.account_id(), self.max_concurrency()
        if login:
            return S4HanaClient(
                base_url=base_url,
                user=login,
                password=secret,
                timeout=timeout,
                account_id=account,
                concurrency_limit=limit,
            )
        return S4HanaClient(
            base_url=base_url, token=secret, timeout=timeout, account_id=account, concurrency_limit=limit
        )

    def account_id(self) -> str:
        """The SAP account this connection posts as: the extra's ``account_id``, else
        ``sap:<host[:port]>`` of the API URL (with ``/<sap_client>`` when the extra names the SAP
        client). The key of the account's request budget and posting lock."""
        from psa_erp_sync.clients.sap import account_name

        base_url, _, extra = self.connection_parts()
        return str(extra.get("account_id") or account_name(base_url, str(extra.get("sap_client") or "")))

    def sap_mapping(self) -> Any:
        """The :class:`~psa_erp_sync.posting.adapter.SapMapping` in the connection's extra:
        ``company_codes`` (legal entity -> company code), optional ``activity_type``,
        ``expense_account``, ``payable_account``."""
        from psa_erp_sync.posting.adapter import SapMapping

        _, _, extra = self.connection_parts()
        defaults = SapMapping(company_codes={})
        return SapMapping(
            company_codes={str(k): str(v) for k, v in dict(extra.get("company_codes") or {}).items()},
            activity_type=str(extra.get("activity_type", defaults.activity_type)),
            expense_account=str(extra.get("expense_account", defaults.expense_account)),
            payable_account=str(extra.get("payable_account", defaults.payable_account)),
            revenue_account=str(extra.get("revenue_account", defaults.revenue_account)),
            receivable_account=str(extra.get("receivable_account", defaults.receivable_account)),
        )

    def adapter(self, client: Any) -> Any:
        """The posting engine's adapter of this SAP system over ``client``."""
        from psa_erp_sync.posting.adapter import adapter_for

        return adapter_for("sap", client, sap_mapping=self.sap_mapping())

    def max_concurrency(self) -> int:
        """The SAP account's limit of requests in flight in the current environment: the entry of
        :meth:`account_id` in ``erp.concurrency.accounts``, else the environment's default."""
        from psa_erp_sync.posting.budget import account_limit

        return account_limit({"account_id": self.account_id()})
