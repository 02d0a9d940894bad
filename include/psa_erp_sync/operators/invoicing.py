"""The invoicing pass as an Airflow task runs it: for :class:`InvoicePostingOperator` and for the
posting operator when a dead-letter replay releases billing documents (``invoice``/``creditmemo``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

#: ERP record types that are billing documents: posted by the invoicing pass, not the planner.
BILLING_TYPES = ("invoice", "creditmemo")


def sap_billing_adapter(stack: Any) -> Any:
    """The SAP billing adapter through the connection ``config/erp_routing.yaml`` names for SAP
    (its client closed with ``stack``), or None when the routing sends nothing to SAP. The
    connection's extra maps legal entities to company codes (``company_codes``) and may name the
    ``receivable_account`` and ``revenue_account`` (docs/billing.md, "Billing on SAP")."""
    from psa_erp_sync.billing.sap import SapBillingAccounts, SapBillingAdapter
    from psa_erp_sync.hooks.sap import SapHook
    from psa_erp_sync.routing.route import router

    routing = router()
    if "sap" not in routing.erps_in_force():
        return None
    hook = SapHook(routing.routing.connection_of("sap"))
    _, _, extra = hook.connection_parts()
    client = stack.enter_context(hook.get_client())
    return SapBillingAdapter(client, hook.sap_mapping(), SapBillingAccounts.from_extra(extra))


def run_invoicing(op: Any, context: Context, *, max_lines: int | None) -> dict[str, Any]:
    """One invoicing pass with the operator's connections, concurrency and batch size; keeps the
    plan and outcomes on ``op`` (for lineage) and fails while documents are still pending."""
    from contextlib import ExitStack

    from psa_erp_sync.billing import invoices
    from psa_erp_sync.billing.invoice_pass import invoice_ready_events
    from psa_erp_sync.operators.single_type import fail_while_pending, posting_pass

    with ExitStack() as stack:
        result = posting_pass(
            op,
            context,
            "invoice",
            invoice_ready_events,
            max_lines=max_lines or invoices.MAX_LINES,
            sap=sap_billing_adapter(stack),
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
