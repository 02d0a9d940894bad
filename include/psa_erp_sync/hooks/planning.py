"""Airflow hook for the planning platform (forecast snapshots)."""

from __future__ import annotations

from typing import Any

from psa_erp_sync.hooks.base import HttpSystemHook


class PlanningHook(HttpSystemHook):
    """Builds a :class:`~psa_erp_sync.clients.planning.PlanningClient` from a connection.

    Connection: host = base URL, password = bearer token.
    """

    conn_name_attr = "planning_conn_id"
    default_conn_name = "planning_default"
    hook_name = "Planning platform"

    def __init__(self, planning_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(planning_conn_id, **kwargs)

    def get_client(self, *, timeout: float = 120.0) -> Any:
        from psa_erp_sync.clients.planning import PlanningClient

        base_url, token, _ = self.connection_parts()
        return PlanningClient(base_url=base_url, token=token, timeout=timeout)
