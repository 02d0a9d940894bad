"""
### Billing: ready billing events -> ERP invoices and credit memos, exactly once

**Owner:** finance-integration · **Domain:** billing

Turns the ready billing events (`billing.event`: one billable source line per version) into ERP
invoices, grouped by the invoice grouping key, through the same posting ledger and engine as every
ERP posting: each document's ledger row is written, and its events move `ready -> invoiced`, in one
transaction before the ERP is called; the document's external id is derived from its member events;
batches, read-back by external id before any resend, the ERP account's shared request budget.
A line changed or unapproved after invoicing arrives as a credit line and becomes a credit memo
against the invoice that billed it: a sent invoice is never edited. A closed period follows the
legal entity's policy (first open period, or parked for finance). See docs/billing.md,
"Invoices exactly once".

**Schedule:** daily at 07:00 UTC. Retrying or clearing the task is safe: it resumes from the ledger.
"""

from __future__ import annotations

from airflow.sdk import dag

from psa_erp_sync.flows import DEFAULT_ARGS, billing, close_deadlines, owner_digest


@dag(
    dag_id="billing",
    schedule=billing.schedule(),
    start_date=billing.START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    **owner_digest(),  # each owner of new exception items gets one digest per run
    **close_deadlines("billing"),  # per legal entity: a missed close deadline alerts its owner
    tags=["domain:billing", "erp", "financial"],
)
def billing_dag() -> None:
    billing.build()


billing_dag()
