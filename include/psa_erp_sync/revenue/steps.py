"""The revenue-recognition DAG's step as a plain function: it takes the ODS connection and the run
facts it needs as explicit arguments (``DomainStepOperator`` supplies them by name) and calls
:func:`~psa_erp_sync.revenue.service.compute_and_store_period`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from psa_erp_sync.revenue import service
from psa_erp_sync.revenue.recognition import month_index

if TYPE_CHECKING:
    from datetime import datetime

    import psycopg

    from psa_erp_sync.config import Config

log = logging.getLogger(__name__)


def target_period(params: dict[str, Any], as_of: datetime) -> int:
    """The month index to recognize: the ``period`` param, else the month before the as-of date."""
    wanted = str(params.get("period") or "")
    if wanted:
        year, month = (int(part) for part in wanted.split("-"))
        return year * 12 + month - 1
    return month_index(as_of.date()) - 1


def recognize_step(
    conn: psycopg.Connection,
    *,
    run_id: str,
    as_of: datetime,
    params: dict[str, Any],
    config: Config,
    erp_adapters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The previous ``periods_back`` periods again, then the target period: computed and stored.

    ``erp_adapters`` (every ERP the routing file sends anything to): the periods of each ERP other
    than NetSuite are read from it, so a journal of an entity routed there is placed by that ERP's
    periods (NetSuite's come from the ODS, as ``master_data_sync`` stored them)."""
    from psa_erp_sync.forecast.settings import load_forecast_settings
    from psa_erp_sync.posting.periods import PeriodBook

    period = target_period(params, as_of)
    back = int(params.get("periods_back", 1))
    settings = load_forecast_settings()
    books = {
        erp: PeriodBook.from_rows(adapter.read_periods())
        for erp, adapter in (erp_adapters or {}).items()
        if erp != "netsuite"
    }
    outcomes = []
    for p in range(period - back, period + 1):
        outcome = service.compute_and_store_period(
            conn, period=p, run_id=run_id, settings=settings, config=config, periods_by_erp=books
        )
        outcomes.append(outcome.as_dict())
    log.info("recognized %d periods through %s", len(outcomes), outcomes[-1]["period"])
    return {"periods": outcomes}


def reconcile_journals_step(
    conn: psycopg.Connection, *, run_id: str, dag_id: str, erp_adapters: dict[str, Any]
) -> dict[str, Any]:
    """Each routed ERP's revenue journals against the ledger (NetSuite's SuiteQL read-back, SAP's
    journal entries per mapped company code): control totals per ERP stored in
    ``audit.control_total`` (committed first), then any difference fails the step naming the
    journal (:mod:`psa_erp_sync.reconcile.revenue_journals`)."""
    from psa_erp_sync.reconcile import revenue_journals

    netsuite, sap = erp_adapters.get("netsuite"), erp_adapters.get("sap")
    results = revenue_journals.reconcile(
        conn,
        netsuite=netsuite.client if netsuite is not None else None,
        sap=(sap.client, list(sap.mapping.company_codes.values())) if sap is not None else None,
        dag_id=dag_id,
        run_id=run_id,
    )
    conn.commit()
    revenue_journals.check(results)
    return {erp: result.as_dict() for erp, result in results.items()}
