"""The billing DAGs' steps as plain functions (invoice status to the PSA, ERP read-back): each takes
the ODS connection, the clients and the run facts it needs as explicit arguments
(``DomainStepOperator`` supplies them by name) and calls
:mod:`~psa_erp_sync.billing.psa_status_runs` or :mod:`~psa_erp_sync.billing.readback`."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from psa_erp_sync.billing import psa_status_runs, readback

if TYPE_CHECKING:
    from datetime import datetime

    import psycopg

    from psa_erp_sync.config import Config

log = logging.getLogger(__name__)


def _logged(step: str, result: Any) -> dict[str, Any]:
    log.info(
        "invoice status %s: %d events, %d invoices, %s", step, result.events, result.invoices, result.outcomes
    )
    return dict(result.as_dict())


def process_invoice_events_step(
    conn: psycopg.Connection, psa: Any, erp: Any, *, run_id: str
) -> dict[str, Any]:
    """Drain the ERP invoice webhooks of the inbox: each invoice's status mirrored to the PSA."""
    conn.autocommit = True
    return _logged("events", psa_status_runs.process_events(conn, psa, erp, run_id=run_id))


def sweep_invoice_status_step(
    conn: psycopg.Connection,
    psa: Any,
    erp: Any,
    *,
    run_id: str,
    as_of: datetime,
    erp_adapters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The daily sweep: every ERP invoice changed since the last sweep, mirrored to the PSA; then,
    when the routing sends anything to SAP, every SAP customer invoice (SAP sends no webhooks)."""
    conn.autocommit = True
    out = _logged("sweep", psa_status_runs.sweep(conn, psa, erp, run_id=run_id, as_of=as_of))
    sap = (erp_adapters or {}).get("sap")
    if sap is not None:
        from psa_erp_sync.billing.sap_status import sweep_sap

        out["sap"] = _logged("sweep (SAP)", sweep_sap(conn, psa, sap, run_id=run_id))
    return out


def read_back_step(
    conn: psycopg.Connection,
    erp: Any,
    *,
    record_type: str,
    run_id: str,
    config: Config,
    erp_adapters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """ERP billing records of one type changed since the watermark (less the overlap) -> ODS; and,
    when the routing sends anything to SAP, SAP's records of that type (``sap`` in the result)."""
    if config.authority.authority_of("invoice") != "erp":
        raise ValueError(
            "invoices are not ERP-owned in config/systems_of_authority.yaml; refusing to read them back"
        )
    mappings = config.mappings
    result = readback.read_back_type(
        conn,
        erp,
        record_type=record_type,
        run_id=run_id,
        overlap=timedelta(minutes=mappings.extract.overlap_minutes),
        jobs=readback.JobMapping(mappings.external_ids["job"]),
    )
    out = result.as_dict()
    sap = (erp_adapters or {}).get("sap")
    if sap is not None:
        sap_result = readback.read_back_sap_type(
            conn,
            sap,
            record_type=record_type,
            run_id=run_id,
            jobs=readback.JobMapping(mappings.external_ids["job"]),
        )
        if sap_result is not None:
            out["sap"] = sap_result.as_dict()
    return out


def bill_milestones_step(
    conn: psycopg.Connection, psa: Any, *, run_id: str, as_of: datetime
) -> dict[str, Any]:
    """Claim the ``milestone.completed`` events: signed-off milestones become billing events."""
    from psa_erp_sync.billing.milestones import process_milestone_inbox
    from psa_erp_sync.billing.settings import load_billing_settings

    result = process_milestone_inbox(
        conn, psa, config=load_billing_settings(), as_of=as_of.date(), run_id=run_id
    )
    return result.as_dict()
