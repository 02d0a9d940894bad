"""Invoice status back to the PSA: the ERP invoice inbox asset and its watcher, the task that drains
ERP invoice webhooks within seconds, and the daily sweep task
(:mod:`psa_erp_sync.billing.psa_status_runs`)."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Asset, AssetWatcher, get_current_context

from psa_erp_sync.flows.context import ids, run_as_of
from psa_erp_sync.ods.inbox import ERP_INVOICE_EVENTS

log = logging.getLogger(__name__)

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


def _run(step: str) -> dict[str, Any]:
    from psa_erp_sync.billing import psa_status_runs as runs
    from psa_erp_sync.hooks.erp import ErpHook
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.hooks.psa import PsaHook

    context = get_current_context()
    _, run_id = ids(context)
    with (
        OdsHook().get_conn() as conn,
        PsaHook().get_client() as psa,
        ErpHook().get_client() as erp,
    ):
        conn.autocommit = True
        if step == "events":
            result = runs.process_events(conn, psa, erp, run_id=run_id)
        else:
            result = runs.sweep(conn, psa, erp, run_id=run_id, as_of=run_as_of(context))
    log.info(
        "invoice status %s: %d events, %d invoices, %s", step, result.events, result.invoices, result.outcomes
    )
    return result.as_dict()


def _process_events() -> dict[str, Any]:
    return _run("events")


def _sweep() -> dict[str, Any]:
    return _run("sweep")


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
    from psa_erp_sync.lineage.refs import ods
    from psa_erp_sync.operators.python import ReportingPythonOperator

    inputs, outputs = _datasets()
    ReportingPythonOperator(
        task_id="process_invoice_events",
        python_callable=_process_events,
        step="billing_status",
        inputs=[ods("inbox.event"), *inputs],
        outputs=[ods("inbox.event"), *outputs],
    )


def build_sweep() -> None:
    """Declare the daily sweep's one task (call inside a DAG context)."""
    from psa_erp_sync.lineage.refs import ods
    from psa_erp_sync.operators.python import ReportingPythonOperator

    inputs, outputs = _datasets()
    ReportingPythonOperator(
        task_id="sweep_invoice_status",
        python_callable=_sweep,
        step="billing_status",
        inputs=[ods("billing.psa_status_sweep"), *inputs],
        outputs=[ods("billing.psa_status_sweep"), *outputs],
    )
