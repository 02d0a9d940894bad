"""Revenue recognition: compute and store a period's recognition and its delta journals.

Task graph (built by :func:`build`)::

    recognize_revenue  (one task: the previous period again, then the period)
      >> post_journals (JournalPostingOperator: planned journals -> ERP journal entries, via the ledger,
                        each to the ERP of its route)
      >> reconcile_journals (each routed ERP read back against the ledger, control totals per ERP)

The period is the month before the run's as-of date (the month that just ended), or the
``period`` param (``YYYY-MM``) for an on-demand run of an open period. The month before it is
recomputed first, so late cost, delivered time or sign-offs of a closed month are caught and go
per the closed-period policy. Retrying or clearing the task is safe: recognitions are unique by
their inputs' hash and journals by their idempotency key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

MONTHLY_CRON = "0 6 1 * *"  # the 1st at 06:00 UTC: the month that just ended
START_DATE = datetime(2026, 1, 1)
PARAMS: dict[str, Any] = {"period": "", "periods_back": 1}


def schedule() -> Any:
    from airflow.sdk import CronTriggerTimetable

    return CronTriggerTimetable(MONTHLY_CRON, timezone="UTC")


def build() -> None:
    """Declare the tasks of the revenue recognition DAG (call inside a DAG context)."""
    from psa_erp_sync.contracts.kinds import KINDS
    from psa_erp_sync.hooks.erp import account_pool
    from psa_erp_sync.lineage.refs import ods, routed_erp
    from psa_erp_sync.operators.revenue import JournalPostingOperator
    from psa_erp_sync.operators.step import DomainStepOperator
    from psa_erp_sync.revenue import steps

    recognize = DomainStepOperator(
        task_id="recognize_revenue",
        call=steps.recognize_step,
        inputs=[
            ods("forecast.src_project"),
            ods("forecast.src_opportunity"),
            ods("forecast.src_change_order"),
            ods("forecast.src_milestone"),
            ods("forecast.src_schedule"),
            ods("forecast.src_person"),
            *(ods(k.canonical_table) for k in KINDS.values()),
            ods("ledger.posting"),
            ods("master.erp_record"),
            ods("hr.worker"),
            ods("hr.cost_rate"),
            # billed per contract: the ERP invoices and credit memos as read back (billing_readback)
            ods("billing.erp_invoice"),
            ods("billing.erp_invoice_line"),
            # the previous recognition and the journals already planned (delta against posted)
            ods("revenue.recognition"),
            ods("revenue.journal"),
            ods("revenue.journal_line"),
        ],
        outputs=[
            ods("revenue.recognition"),
            ods("revenue.journal"),
            ods("revenue.journal_line"),
            ods("exceptions.item"),
        ],
    )
    # In the ERP account's pool: its request limit is shared with every other posting path.
    post = JournalPostingOperator(task_id="post_journals", pool=account_pool())
    # Each routed ERP's journals read back against the ledger, control totals per ERP.
    reconcile = DomainStepOperator(
        task_id="reconcile_journals",
        call=steps.reconcile_journals_step,
        inputs=[ods("ledger.posting"), routed_erp("journalentry")],
        outputs=[ods("audit.control_total")],
    )
    recognize >> post >> reconcile
