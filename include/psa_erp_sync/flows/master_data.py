"""Master data: ERP -> ODS (incremental, per record type) -> ERP-owned changes to the PSA -> asset.

Task graph (built by :func:`build`)::

    sync_subsidiary -> sync_currency -> sync_taxcode -> sync_customer -> sync_job -> sync_accountingperiod
        -> sync_currencyrate ─┬─> propagate_to_psa -> publish_master_data (outlet: the MASTER_DATA asset)
    sync_sap ─────────────────┴───────────────────────┘

``sync_sap`` reads SAP's master data (customers, WBS elements, posting periods per company code)
while the routing file in force sends anything to SAP, and does nothing otherwise
(:mod:`psa_erp_sync.masterdata.sap_sync`; docs/multi-erp.md, "Downstream per ERP"). One ERP's
failure does not hide the other's result: ``propagate_to_psa`` runs once both are done (what each
committed is carried to the PSA), and ``publish_master_data`` needs both to succeed, so the run
fails and the asset is not published when either failed.

``sync_currencyrate`` reads every ERP currency rate into ``master.currency_rate``: the rates
foreign-currency time and expenses are validated and posted with (docs/billing.md, "Foreign currency").

Each sync reads ``lastmodifieddate >= watermark - overlap``; a retried or cleared task re-reads
harmlessly (staging dedupes by id and content hash). Propagation applies each pending change once.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

from psa_erp_sync.flows import default_args

DEFAULT_ARGS: dict[str, Any] = default_args("finance-master-data")


def build() -> None:
    """Declare the tasks of the master-data DAG (call inside a DAG context)."""
    from psa_erp_sync.assets import MASTER_DATA
    from psa_erp_sync.lineage.refs import erp, erp_in_force, ods, psa
    from psa_erp_sync.masterdata import steps
    from psa_erp_sync.masterdata.sync import RECORD_TYPES
    from psa_erp_sync.operators.step import DomainStepOperator

    previous = None
    for record_type in RECORD_TYPES:
        # ERP (SuiteQL, lastmodifieddate >= watermark - overlap) -> ODS master records and the
        # changes to propagate to the PSA.
        current = DomainStepOperator(
            task_id=f"sync_{record_type}",
            call=steps.sync_record_type_step,
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
    rates = DomainStepOperator(
        task_id="sync_currencyrate",
        call=steps.sync_currency_rates_step,
        inputs=[erp("currencyrate")],
        outputs=[ods("master.currency_rate")],
        step="master_sync:currencyrate",
    )
    assert previous is not None
    previous >> rates
    previous = rates

    # SAP (full reads per company code, $top/$skip) -> ODS master records and changes for the PSA,
    # when the routing in force sends anything to SAP. Its datasets resolve at run time, in SAP's
    # own namespace, and only while SAP is in force.
    sap = DomainStepOperator(
        task_id="sync_sap",
        call=steps.sync_sap_step,
        inputs=[erp_in_force("sap", t) for t in ("customer", "job", "accountingperiod")],
        outputs=[
            ods("master.erp_record"),
            ods("master.propagation"),
            ods("staging.raw_record"),
            ods("routing.xref"),
            ods("exceptions.item"),
        ],
        step="master_sync:sap",
    )

    # Renames, merges and deactivations the ERPs made, applied to PSA clients and projects: after
    # both ERPs' syncs, whether or not one failed (each committed what it read).
    propagated = DomainStepOperator(
        task_id="propagate_to_psa",
        call=steps.propagate_step,
        inputs=[ods("master.propagation"), ods("master.erp_record")],
        outputs=[psa("/v2/clients"), psa("/v2/projects"), ods("master.propagation")],
        trigger_rule="all_done",
    )

    @task(task_id="publish_master_data", outlets=[MASTER_DATA])
    def publish_master_data(propagated: Any) -> dict[str, Any]:
        """Mark the master data as refreshed: downstream DAGs scheduled on the asset start."""
        return {"propagated": propagated}

    assert previous is not None
    [previous, sap] >> propagated
    published = publish_master_data(propagated.output)
    [previous, sap] >> published  # the asset only when every ERP's sync succeeded
