"""Invoice status back to the PSA: the ERP invoice inbox asset and its watcher, the task that drains
ERP invoice webhooks within seconds, and the daily sweep task
(:mod:`psa_erp_sync.billing.psa_status_runs`)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetWatcher

from psa_erp_sync.ods.inbox import ERP_INVOICE_EVENTS

ASSET_NAME = "psa_erp_sync.inbox.erp_invoices"
POLL_SECONDS = 5.0  # LISTEN/NOTIFY wakes the trigger at once; polling is only the fallback


def inbox_asset() -> Asset:
    """The asset the stream DAG is scheduled on (no I/O: the trigger only connects in the triggerer)."""
    from psa_erp_sync.triggers.inbox import InboxArrivalTrigger

    trigger = InboxArrivalTrigger(
        ods_conn_id="ods_default",
        source_system="erp",
        event_types=list(ERP_INVOICE_EVENTS),
        poll_seconds=POLL_SECONDS,
    )
    return Asset(
        name=ASSET_NAME,
        uri="psa-erp-sync://ods/inbox/erp_invoices",
        watchers=[AssetWatcher(name="inbox_erp_invoice_arrivals", trigger=trigger)],
    )


def _datasets() -> tuple[list[Any], list[Any]]:
    from psa_erp_sync.lineage.refs import erp, ods, psa

    inputs = [erp("invoice"), erp("customerpayment"), ods("billing.psa_invoice"), psa("/v2/invoices")]
    outputs = [
        ods("billing.psa_invoice"),
        psa("/v2/invoices"),
        psa("/v2/time_entries"),
        psa("/v2/expenses"),
    ]
    return inputs, outputs


def build_stream() -> None:
    """Declare the stream DAG's one task (call inside a DAG context): drain ERP invoice events."""
    from psa_erp_sync.billing import steps
    from psa_erp_sync.lineage.refs import ods
    from psa_erp_sync.operators.step import DomainStepOperator

    inputs, outputs = _datasets()
    DomainStepOperator(
        task_id="process_invoice_events",
        call=steps.process_invoice_events_step,
        step="billing_status",
        inputs=[ods("inbox.event"), *inputs],
        outputs=[ods("inbox.event"), *outputs],
    )


def build_sweep() -> None:
    """Declare the daily sweep's one task (call inside a DAG context)."""
    from psa_erp_sync.billing import steps
    from psa_erp_sync.lineage.refs import ods
    from psa_erp_sync.operators.step import DomainStepOperator

    inputs, outputs = _datasets()
    DomainStepOperator(
        task_id="sweep_invoice_status",
        call=steps.sweep_invoice_status_step,
        step="billing_status",
        inputs=[ods("billing.psa_status_sweep"), *inputs],
        outputs=[ods("billing.psa_status_sweep"), *outputs],
    )
