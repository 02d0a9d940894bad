"""InvoicePostingOperator: ready billing events -> ERP invoices and credit memos, exactly once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psa_erp_sync.operators.single_type import SingleTypePostingOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class InvoicePostingOperator(SingleTypePostingOperator):
    """The idempotent posting operator for billing documents: plans invoices (then credit memos
    against the invoices they credit) from ready ``billing.event`` rows into the posting ledger,
    each document and its events' move to ``invoiced`` committed before the ERP is called, and
    works the ledger with the same engine (batches, read-back by external id before any resend,
    the ERP account's shared budget, the posting locks of ``invoice`` and ``creditmemo``). A
    retried or cleared task resumes from the ledger. docs/billing.md, "Invoices exactly once".

    Takes the connections, concurrency and batch size (documents per batch call) of
    :class:`~psa_erp_sync.operators.single_type.SingleTypePostingOperator`, and

    :param max_lines: billing events per document at most (a bigger group is split in event order).
    """

    posts_record_type = "invoice"
    ui_color = "#e6e0f5"

    def __init__(self, *, max_lines: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_lines = max_lines
        self.outcomes: dict[str, dict[str, Any]] | None = None
        self.totals: dict[str, Any] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from psa_erp_sync.operators.invoicing import run_invoicing

        return run_invoicing(self, context, max_lines=self.max_lines)

    def lineage_run_facets(self) -> dict[str, Any]:
        from psa_erp_sync.lineage.facets import InvoiceTotalsRunFacet

        facets = super().lineage_run_facets()
        if self.totals is not None:
            facets["invoiceTotals"] = InvoiceTotalsRunFacet.from_totals(self.totals)
        return facets

    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        from psa_erp_sync.lineage.refs import resolve, routed_erp

        # The graph reads canonical time entry -> billing.event (the events builder) -> this task ->
        # ERP invoice / creditmemo; credit memos read the documents they credit; periods from the ERP.
        # Each ERP the routing in force sends anything to, in its own namespace (SAP: its journal
        # entries and posting periods), resolved now, never at parse time (docs/billing.md).
        conn_ids = {"erp": self.erp_conn_id or "erp_default"}
        inputs = [
            self.ods_dataset("billing", "event"),
            self.ods_dataset("billing", "document"),
            self.ods_dataset("billing", "document_line"),
            self.ods_dataset("ledger", "posting"),
            *resolve([routed_erp("accountingperiod")], conn_ids),
        ]
        documents = resolve([routed_erp("invoice"), routed_erp("creditmemo")], conn_ids)
        outputs = [
            *{(d.namespace, d.name): d for d in documents}.values(),  # SAP: one entity set for both
            self.ods_dataset("billing", "document"),
            self.ods_dataset("billing", "document_line"),
            self.ods_dataset("billing", "event"),
            self.ods_dataset("ledger", "posting"),
            self.ods_dataset("exceptions", "item"),
        ]
        return inputs, outputs
