"""The project-setup and master-data DAGs' steps as plain functions: each takes the ODS connection,
the clients and the run facts it needs as explicit arguments (``DomainStepOperator`` supplies them
by name) and calls :mod:`~psa_erp_sync.masterdata.setup`, :mod:`~psa_erp_sync.masterdata.change_orders`,
:mod:`~psa_erp_sync.masterdata.sync`, :mod:`~psa_erp_sync.masterdata.fx` or
:mod:`~psa_erp_sync.masterdata.propagate`."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from psa_erp_sync.masterdata import change_orders, erp_targets, fx, propagate, setup, sync

if TYPE_CHECKING:
    from datetime import datetime

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
    erp_for: Any = None,
    as_of: datetime | None = None,
) -> dict[str, Any]:
    """ERP job by external id, then the PSA project, then the links, for every accepted verdict.
    During a transition (``config/erp_routing.yaml`` routes to several ERPs) each job goes to the
    ERP its legal entity routes to on ``as_of`` (:class:`~psa_erp_sync.masterdata.erp_targets.RoutedErpWriter`)."""
    from psa_erp_sync.routing.route import router

    routing = router()
    if erp_for is not None and as_of is not None and routing.erps_in_force() != ["netsuite"]:
        erp = erp_targets.RoutedErpWriter(
            routing,
            lambda name: erp_for(routing.routing.connection_of(name)),
            as_of=as_of.date(),
            placed=setup.placed_jobs(conn, routing, as_of.date()),
        )
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


ERP_OWNED_DOMAINS = ("customer", "legal_entity", "currency", "tax_code", "accounting_period")


def check_erp_authority(config: Config) -> None:
    """The master-data DAG runs only while the configuration says the ERP owns these domains and
    their changes propagate from the ERP."""
    authority = config.authority
    for domain in ERP_OWNED_DOMAINS:
        if authority.authority_of(domain) != "erp" or authority.flows_from(domain) != "erp":
            raise ValueError(
                f"{domain} is not ERP-owned, or does not propagate from the ERP, in"
                " config/systems_of_authority.yaml; refusing to sync it"
            )


def sync_record_type_step(
    conn: psycopg.Connection,
    erp: Any,
    *,
    record_type: str,
    dag_id: str,
    run_id: str,
    as_of: datetime,
    config: Config,
) -> dict[str, Any]:
    """ERP (SuiteQL, ``lastmodifieddate >= watermark - overlap``) -> ODS master records and the
    changes to propagate to the PSA, for one record type."""
    check_erp_authority(config)
    result = sync.sync_record_type(
        conn,
        erp,
        record_type=record_type,
        run_key=f"{dag_id}/{run_id}/{record_type}",
        run_id=run_id,
        as_of=as_of,
        overlap=timedelta(minutes=config.mappings.extract.overlap_minutes),
    )
    return result.as_dict()


def sync_sap_step(
    conn: psycopg.Connection,
    erp_for: Any,
    *,
    dag_id: str,
    run_id: str,
    as_of: datetime,
    config: Config,
) -> dict[str, Any]:
    """SAP -> ODS master records (customers, WBS elements, posting periods of every company code
    a legal entity routed to SAP maps to) and their changes for the PSA; nothing, and no SAP call,
    while the routing file in force sends nothing to SAP (:mod:`~psa_erp_sync.masterdata.sap_sync`)."""
    from psa_erp_sync.masterdata import sap_sync
    from psa_erp_sync.routing.route import router

    check_erp_authority(config)
    routing = router()
    if sap_sync.ERP not in routing.erps_in_force():
        return {"erp": sap_sync.ERP, "in_force": False}
    writer = erp_for(routing.routing.connection_of(sap_sync.ERP))  # a SapMasterWriter: client + mapping
    result = sap_sync.sync_sap(
        conn,
        writer.client,
        writer.company_codes,
        routing,
        run_key=f"{dag_id}/{run_id}/sap",
        run_id=run_id,
        as_of=as_of,
        owner_for=config.ownership.owner_for,
    )
    return {"in_force": True, **result.as_dict()}


def sync_currency_rates_step(conn: psycopg.Connection, erp: Any, *, config: Config) -> dict[str, Any]:
    """Every ERP currency rate into ``master.currency_rate``."""
    check_erp_authority(config)
    return dict(fx.sync_currency_rates(conn, erp))


def propagate_step(conn: psycopg.Connection, psa: Any, *, run_id: str) -> dict[str, Any]:
    """Renames, merges and deactivations the ERP made, applied to PSA clients and projects."""
    return propagate.propagate_pending(conn, psa, run_id=run_id).as_dict()
