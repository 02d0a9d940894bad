"""
### Month-end close: periods open, then sweep

**Owner:** finance-integration · **Domain:** financial close

Every morning, waits — deferred in the triggerer, holding no worker slot — until the current ERP
accounting period of every legal entity accepts postings, then starts a sweep of
`time_expense_posting` so entries of a newly opened month post immediately instead of being moved
or parked. The posting cadence itself switches to every 15 minutes inside close windows (see
`time_expense_posting`). Sensors time out after 18 hours and then fail the run: a period that is
still closed by then needs finance's attention.

**Close report:** beside the waits, `close_report` computes per legal entity the report of the
month before the run (revenue recognized vs billed, WIP and deferred balances, postings by state,
reconciliation to the cent of time, expenses, invoices and journals, open exceptions, leakage),
stores it in `close.report`, writes HTML and JSON (`PSA_ERP_SYNC_CLOSE_REPORT_DIR`), and fails
naming the first differing records when anything does not reconcile (docs/billing.md).

**Deadline alerts:** per legal entity, the run is done by 18:00 local that business day, else
the entity's owner is alerted (`config/close_deadlines.yaml`, docs/operations.md "Deadline alerts").

**Schedule:** daily at 05:00 UTC.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from psa_erp_sync.flows import DEFAULT_ARGS, close_deadlines, month_end, owner_digest


@dag(
    dag_id="month_end_close",
    schedule="0 5 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    **owner_digest(),  # each owner of new exception items gets one digest per run
    **close_deadlines("month_end_close"),  # per legal entity: a missed close deadline alerts its owner
    tags=["domain:financial-close", "erp", "financial"],
)
def month_end_close() -> None:
    month_end.build()


month_end_close()
