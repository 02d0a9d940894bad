"""The project-setup DAG's steps as plain functions: each takes the ODS connection, the clients and
the run facts it needs as explicit arguments (``DomainStepOperator`` supplies them by name) and
calls :mod:`~psa_erp_sync.masterdata.setup` or :mod:`~psa_erp_sync.masterdata.change_orders`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from psa_erp_sync.masterdata import change_orders, setup

if TYPE_CHECKING:
    import psycopg

    from psa_erp_sync.config import Config

log = logging.getLogger(__name__)


def collect_closed_won(
    conn: psycopg.Connection, crm: Any, *, run_id: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Closed-won events since the cursor, the ids the trigger form asks for, and setups not yet
    complete: the candidates for ERP validation."""
    extra_ids = [int(i) for i in (params.get("opportunity_ids") or [])]
    return setup.collect(conn, crm, run_id=run_id, extra_ids=extra_ids)


def provision_projects(
    conn: psycopg.Connection,
    erp: Any,
    psa: Any,
    *,
    run_id: str,
    config: Config,
    validated: dict[str, Any] | None,
) -> dict[str, Any]:
    """ERP job by external id, then the PSA project, then the links, for every accepted verdict."""
    return setup.provision(
        conn,
        erp,
        psa,
        run_id=run_id,
        verdicts=(validated or {}).get("verdicts", []),
        owner_for=config.ownership.owner_for,
    )


def reconcile_change_orders(
    conn: psycopg.Connection, crm: Any, erp: Any, psa: Any, *, run_id: str, config: Config
) -> dict[str, Any]:
    """Revenue leakage: approved change orders absent from the ERP, and PSA budgets above the ERP
    contract value that no approved change order explains (count and amount, by source system)."""
    report = change_orders.reconcile(
        conn, crm, erp, psa, run_id=run_id, owner=config.authority.owner_of("change_order")
    )
    log.info(
        "revenue leakage this run: CRM %d change orders, %s; PSA %d projects over the ERP contract value, %s;"
        " won opportunities without an ERP job: %d",
        report["leaked_change_orders"],
        report["leaked_amount"],
        report["psa_leaked_projects"],
        report["psa_leaked_amount"],
        report["jobs_missing"],
    )
    return report
