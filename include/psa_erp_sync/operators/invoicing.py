"""The invoicing pass as an Airflow task runs it: for :class:`InvoicePostingOperator` and for the
posting operator when a dead-letter replay releases billing documents (``invoice``/``creditmemo``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

#: ERP record types that are billing documents: posted by the invoicing pass, not the planner.
BILLING_TYPES = ("invoice", "creditmemo")


def run_invoicing(op: Any, context: Context, *, max_lines: int | None) -> dict[str, Any]:
    """One invoicing pass with the operator's connections, concurrency and batch size; keeps the
    plan and outcomes on ``op`` (for lineage) and fails while documents are still pending."""
    from psa_erp_sync.billing import invoices
    from psa_erp_sync.billing.invoice_pass import invoice_ready_events
    from psa_erp_sync.operators.single_type import fail_while_pending, posting_pass

    result = posting_pass(
        op, context, "invoice", invoice_ready_events, max_lines=max_lines or invoices.MAX_LINES
    )
    op.plan_summary, op.outcomes = result.plan, result.outcome
    op.totals = result.totals
    op.outcome = result.outcome["invoice"]
    for doc_type, outcome in result.outcome.items():
        op.log.info(
            "%s: posted %d, already posted %d, ambiguous resolved %d, rejected %d, parked %d, still pending %d",
            doc_type,
            outcome["posted"],
            outcome["already_posted"],
            outcome["ambiguous_resolved"],
            outcome["rejected"],
            outcome["parked"],
            outcome["still_pending"],
        )
    fail_while_pending(result.still_pending, "billing documents")
    return {
        "plan": result.plan,
        "outcome": result.outcome,
        "documents": result.documents,
        "totals": result.totals,
    }
