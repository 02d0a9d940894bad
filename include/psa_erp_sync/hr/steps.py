"""The hr_sync DAG's steps as plain functions: each takes the ODS connection, the clients and the
run facts it needs as explicit arguments (``DomainStepOperator`` supplies them by name) and calls
:mod:`~psa_erp_sync.hr.sync` or :mod:`~psa_erp_sync.hr.propagate`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from psa_erp_sync.hr import propagate, sync

if TYPE_CHECKING:
    from datetime import datetime

    import psycopg

    from psa_erp_sync.config import Config

HR_OWNED_DOMAINS = ("resource", "cost_rate")


def check_hr_authority(config: Config) -> None:
    """The DAG runs only while the configuration says HR owns people and cost rates."""
    authority = config.authority
    for domain in HR_OWNED_DOMAINS:
        if authority.authority_of(domain) != "hr" or authority.flows_from(domain) != "hr":
            raise ValueError(
                f"{domain} is not HR-owned, or does not propagate from HR, in"
                " config/systems_of_authority.yaml; refusing to sync it"
            )


def sync_workers_step(
    conn: psycopg.Connection, workday: Any, *, run_id: str, as_of: datetime, config: Config
) -> dict[str, Any]:
    """Every Workday worker into ``hr.worker``/``hr.worker_version``, with the client's request counts."""
    check_hr_authority(config)
    result = sync.sync_workers(conn, workday, as_of=as_of.date(), run_id=run_id, config=config)
    return {**result.as_dict(), "workday_requests": workday.requests_made, "throttled": workday.throttled}


def sync_cost_rates_step(
    conn: psycopg.Connection, workday: Any, *, run_id: str, config: Config
) -> dict[str, Any]:
    """The Workday cost-rate report into ``hr.cost_rate``."""
    return dict(sync.sync_cost_rates(conn, workday, run_id=run_id, config=config))


def propagate_to_psa_step(
    conn: psycopg.Connection, psa: Any, *, run_id: str, as_of: datetime, config: Config
) -> dict[str, Any]:
    """Converge every worker's PSA user to HR."""
    check_hr_authority(config)
    return propagate.propagate_to_psa(conn, psa, as_of=as_of.date(), run_id=run_id, config=config).as_dict()


def propagate_to_erp_step(
    conn: psycopg.Connection,
    erp_for: Callable[[str], Any],
    *,
    run_id: str,
    as_of: datetime,
    config: Config,
) -> dict[str, Any]:
    """Every worker's ERP employee, in the ERP account of the worker's legal entity."""
    return propagate.propagate_to_erp(
        conn, erp_for, as_of=as_of.date(), run_id=run_id, config=config
    ).as_dict()
