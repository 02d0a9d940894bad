"""Master data: ERP -> ODS (incremental, per record type) -> ERP-owned changes to the PSA -> asset.

Task graph (built by :func:`build`)::

    sync_subsidiary -> sync_currency -> sync_taxcode -> sync_customer -> sync_job -> sync_accountingperiod
        -> propagate_to_psa -> publish_master_data (outlet: the MASTER_DATA asset)

Each sync reads ``lastmodifieddate >= watermark - overlap``; a retried or cleared task re-reads
harmlessly (staging dedupes by id and content hash). Propagation applies each pending change once.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import get_current_context, task

from psa_erp_sync.flows.context import ids, run_as_of

log = logging.getLogger(__name__)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "finance-master-data",
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}


def _authority_check() -> None:
    """The DAG runs only while the configuration says the ERP owns these domains."""
    from psa_erp_sync.config import load_config

    authority = load_config().authority
    for domain in ("customer", "legal_entity", "currency", "tax_code", "accounting_period"):
        if authority.authority_of(domain) != "erp":
            raise ValueError(
                f"{domain} is not ERP-owned in config/systems_of_authority.yaml; refusing to sync it"
            )


def _sync(record_type: str) -> dict[str, Any]:
    from psa_erp_sync.config import load_config
    from psa_erp_sync.hooks.erp import ErpHook
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.masterdata import sync

    _authority_check()
    context = get_current_context()
    dag_id, run_id = ids(context)
    overlap = timedelta(minutes=load_config().mappings.extract.overlap_minutes)
    with ErpHook().get_client() as client, OdsHook().get_conn() as conn:
        result = sync.sync_record_type(
            conn,
            client,
            record_type=record_type,
            run_key=f"{dag_id}/{run_id}/{record_type}",
            run_id=run_id,
            as_of=run_as_of(context),
            overlap=overlap,
        )
    return result.as_dict()


def _propagate() -> dict[str, Any]:
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.hooks.psa import PsaHook
    from psa_erp_sync.masterdata import propagate

    _, run_id = ids(get_current_context())
    with PsaHook().get_client() as psa, OdsHook().get_conn() as conn:
        return propagate.propagate_pending(conn, psa, run_id=run_id).as_dict()


def build() -> None:
    """Declare the tasks of the master-data DAG (call inside a DAG context)."""
    from psa_erp_sync.assets import MASTER_DATA
    from psa_erp_sync.masterdata.sync import RECORD_TYPES

    previous = None
    for record_type in RECORD_TYPES:

        @task(task_id=f"sync_{record_type}")
        def sync_one(record_type: str = record_type) -> dict[str, Any]:
            return _sync(record_type)

        current = sync_one()
        if previous is not None:
            previous >> current
        previous = current

    @task(task_id="propagate_to_psa")
    def propagate_to_psa() -> dict[str, Any]:
        """Renames, merges and deactivations the ERP made, applied to PSA clients and projects."""
        return _propagate()

    @task(task_id="publish_master_data", outlets=[MASTER_DATA])
    def publish_master_data(propagated: Any) -> dict[str, Any]:
        """Mark the master data as refreshed: downstream DAGs scheduled on the asset start."""
        return {"propagated": propagated}

    propagated = propagate_to_psa()
    assert previous is not None
    previous >> propagated
    publish_master_data(propagated)
