"""Billing: ready billing events -> ERP invoices and credit memos.

Task graph (built by :func:`build`)::

    build_billing_events (DomainStepOperator: billing.events.build_events_step)
        -> invoice  (InvoicePostingOperator: invoices, then credit memos, through the posting ledger)

``build_billing_events`` declares :func:`event_lineage` as its inputs and outputs, so the lineage
graph reads canonical time entry -> ``billing.event`` -> ERP invoice. Retrying or clearing either
task is safe: events are keyed by source and version, documents by their member events and resumed
from the ledger.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

DAILY_CRON = "0 7 * * *"  # after the night's approvals are in; invoices go out in the morning
START_DATE = datetime(2026, 1, 1)
POSTING_RETRY_DELAY = timedelta(seconds=30)


def schedule() -> Any:
    from airflow.sdk import CronTriggerTimetable

    return CronTriggerTimetable(DAILY_CRON, timezone="UTC")


def event_lineage() -> tuple[list[Any], list[Any]]:
    """(inputs, outputs) of the billing events builder as :mod:`psa_erp_sync.lineage.refs`: the
    canonical time and expense entries whose posting the ERP confirmed (``ledger.posting``), signed-off
    milestones, the project list and customers; it writes ``billing.event``."""
    from psa_erp_sync.contracts.kinds import KINDS
    from psa_erp_sync.lineage.refs import ods

    inputs = [
        *(ods(k.canonical_table) for k in KINDS.values()),
        ods("ledger.posting"),
        ods("forecast.src_project"),
        ods("forecast.src_milestone"),
        ods("forecast.extract"),
        ods("billing.milestone_read"),
        ods("master.erp_record"),
        ods("billing.event"),
    ]
    return inputs, [ods("billing.event")]


def build() -> Any:
    """Declare the tasks of the billing DAG (call inside a DAG context); returns the invoice task."""
    from psa_erp_sync.billing import events
    from psa_erp_sync.hooks.erp import account_pool
    from psa_erp_sync.operators.billing import InvoicePostingOperator
    from psa_erp_sync.operators.step import DomainStepOperator

    inputs, outputs = event_lineage()
    built = DomainStepOperator(
        task_id="build_billing_events",
        call=events.build_events_step,
        step="billing.events",
        inputs=inputs,
        outputs=outputs,
    )
    # In the ERP account's pool: its request limit is shared with every other posting path.
    invoice = InvoicePostingOperator(task_id="invoice", pool=account_pool(), retry_delay=POSTING_RETRY_DELAY)
    built >> invoice
    return invoice
