"""Invoice status back to the PSA: the ERP invoice inbox asset and its watcher, the task that drains
ERP invoice webhooks within seconds, and the daily sweep task
(:mod:`psa_erp_sync.billing.psa_status_runs`)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset

from psa_erp_sync.ods.inbox import ERP_INVOICE_EVENTS

ASSET_NAME = "psa_erp_sync.inbox.erp_invoices"


def inbox_asset() -> Asset:
    """The asset the stream DAG is scheduled on: ERP invoice events in the inbox."""
    from psa_erp_sync.flows import inbox_asset as watched

    return watched(ASSET_NAME, "inbox_erp_invoice_arrivals", "erp", list(ERP_INVOICE_EVENTS))


def _status_task(task_id: str, call: Any, own_table: str, *, sap: bool = False) -> None:
    """One task that moves ERP invoice status to the PSA; ``own_table`` is the ODS table only it
    reads and writes (the stream's inbox, the sweep's watermark). ``sap``: it also reads SAP's
    customer documents (invoices and payments, one entity set) while the routing in force names
    SAP, resolved when lineage is asked for."""
    from psa_erp_sync.lineage.refs import erp, erp_in_force, ods, psa
    from psa_erp_sync.operators.step import DomainStepOperator

    shared = [ods("billing.psa_invoice"), psa("/v2/invoices")]
    in_sap = [erp_in_force("sap", "invoice")] if sap else []
    DomainStepOperator(
        task_id=task_id,
        call=call,
        step="billing_status",
        inputs=[ods(own_table), erp("invoice"), erp("customerpayment"), *in_sap, *shared],
        outputs=[ods(own_table), *shared, psa("/v2/time_entries"), psa("/v2/expenses")],
    )


def build_stream() -> None:
    """Declare the stream DAG's one task (call inside a DAG context): drain ERP invoice events."""
    from psa_erp_sync.billing import steps

    _status_task("process_invoice_events", steps.process_invoice_events_step, "inbox.event")


def build_sweep() -> None:
    """Declare the daily sweep's one task (call inside a DAG context)."""
    from psa_erp_sync.billing import steps

    _status_task(
        "sweep_invoice_status", steps.sweep_invoice_status_step, "billing.psa_status_sweep", sap=True
    )
