"""Master data: ERP -> ODS (incremental, per record type) -> ERP-owned changes to the PSA -> asset.

Task graph (built by :func:`build`)::

    sync_subsidiary -> sync_currency -> sync_taxcode -> sync_customer -> sync_job -> sync_accountingperiod
        -> sync_currencyrate -> propagate_to_psa -> publish_master_data (outlet: the MASTER_DATA asset)

``sync_currencyrate`` reads every ERP currency rate into ``master.currency_rate``: the rates
foreign-currency time and expenses are validated and posted with (docs/billing.md, "Foreign currency").

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
    """The DAG runs only while the configuration says the ERP owns these domains and their
    changes propagate from the ERP."""
    from psa_erp_sync.config import load_config

    authority = load_config().authority
    for domain in ("customer", "legal_entity", "currency", "tax_code", "accounting_period"):
        if authority.authority_of(domain) != "erp" or authority.flows_from(domain) != "erp":
            raise ValueError(
                f"{domain} is not ERP-owned, or does not propagate from the ERP, in"
                " config/systems_of_authority.yaml; refusing to sync it"
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


def _sync_currency_rates() -> dict[str, Any]:
    from psa_erp_sync.hooks.erp import ErpHook
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.masterdata import fx

    _authority_check()
    with ErpHook().get_client() as client, OdsHook().get_conn() as conn:
        return fx.sync_currency_rates(conn, client)


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
    from psa_erp_sync.lineage.refs import erp, ods, psa
    from psa_erp_sync.masterdata.sync import RECORD_TYPES
    from psa_erp_sync.operators.python import ReportingPythonOperator

    previous = None
    for record_type in RECORD_TYPES:
        # ERP (SuiteQL, lastmodifieddate >= watermark - overlap) -> ODS master records and the
        # changes to propagate to the PSA.
        current = ReportingPythonOperator(
            task_id=f"sync_{record_type}",
            python_callable=_sync,
            op_kwargs={"record_type": record_type},
            inputs=[erp(record_type)],
            outputs=[
                ods("master.erp_record"),
                ods("master.propagation"),
                ods("staging.raw_record"),
                ods("staging.watermark"),
            ],
            step=f"master_sync:{record_type}",
        )
        if previous is not None:
            previous >> current
        previous = current

    # The ERP's currency rates (all of them: a few per day and pair) for foreign-currency work.
    rates = ReportingPythonOperator(
        task_id="sync_currencyrate",
        python_callable=_sync_currency_rates,
        inputs=[erp("currencyrate")],
        outputs=[ods("master.currency_rate")],
        step="master_sync:currencyrate",
    )
    assert previous is not None
    previous >> rates
    previous = rates

    # Renames, merges and deactivations the ERP made, applied to PSA clients and projects.
    propagated = ReportingPythonOperator(
        task_id="propagate_to_psa",
        python_callable=_propagate,
        inputs=[ods("master.propagation"), ods("master.erp_record")],
        outputs=[psa("/v2/clients"), psa("/v2/projects"), ods("master.propagation")],
    )

    @task(task_id="publish_master_data", outlets=[MASTER_DATA])
    def publish_master_data(propagated: Any) -> dict[str, Any]:
        """Mark the master data as refreshed: downstream DAGs scheduled on the asset start."""
        return {"propagated": propagated}

    assert previous is not None
    previous >> propagated
    publish_master_data(propagated.output)
