"""InvoicePostingOperator: ready billing events -> ERP invoices and credit memos, exactly once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psa_erp_sync.operators.posting import IdempotentPostingOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class InvoicePostingOperator(IdempotentPostingOperator):
    """The idempotent posting operator for billing documents: plans invoices (then credit memos
    against the invoices they credit) from ready ``billing.event`` rows into the posting ledger,
    each document and its events' move to ``invoiced`` committed before the ERP is called, and
    works the ledger with the same engine (batches, read-back by external id before any resend,
    the ERP account's shared budget, the posting locks of ``invoice`` and ``creditmemo``). A
    retried or cleared task resumes from the ledger. docs/billing.md, "Invoices exactly once".

    :param erp_conn_id: Airflow connection of the ERP.
    :param ods_conn_id: Airflow connection of the ODS.
    :param max_concurrency: this task's ERP requests in flight, at most the account's limit.
    :param batch_size: documents per batch call (at most 100); default ``posting.batch_size``.
    :param max_lines: billing events per document at most (a bigger group is split in event order).
    """

    template_fields: Sequence[str] = ("record_type",)
    ui_color = "#e6e0f5"

    def __init__(
        self,
        *,
        erp_conn_id: str = "erp_default",
        ods_conn_id: str = "ods_default",
        max_concurrency: int | None = None,
        batch_size: int | None = None,
        max_lines: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            record_type="invoice",
            erp_conn_id=erp_conn_id,
            ods_conn_id=ods_conn_id,
            max_concurrency=max_concurrency,
            batch_size=batch_size,
            **kwargs,
        )
        self.max_lines = max_lines
        self.outcomes: dict[str, dict[str, Any]] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from psa_erp_sync.billing import invoices
        from psa_erp_sync.billing.invoice_pass import invoice_ready_events
        from psa_erp_sync.config import load_config
        from psa_erp_sync.hooks.erp import ErpHook
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.posting.engine import EngineSettings

        config = load_config()
        erp_hook = ErpHook(self.erp_conn_id or "erp_default")
        limit = erp_hook.max_concurrency()
        concurrency = min(self.max_concurrency or limit, limit)
        self.record_lineage_run(context, "invoice")
        with erp_hook.get_client() as client:
            result = invoice_ready_events(
                dsn=OdsHook(self.ods_conn_id).dsn(),
                client=client,
                config=config,
                settings=EngineSettings.from_config(
                    config, batch_size=self.batch_size, max_concurrency=concurrency
                ),
                run_id=context["run_id"],
                task_try=getattr(context["ti"], "try_number", None),
                max_lines=self.max_lines or invoices.MAX_LINES,
            )
        self.plan_summary, self.outcomes = result.plan, result.outcome
        self.outcome = result.outcome["invoice"]
        for doc_type, outcome in result.outcome.items():
            self.log.info(
                "%s: posted %d, already posted %d, ambiguous resolved %d, rejected %d, parked %d, still pending %d",
                doc_type,
                outcome["posted"],
                outcome["already_posted"],
                outcome["ambiguous_resolved"],
                outcome["rejected"],
                outcome["parked"],
                outcome["still_pending"],
            )
        if result.still_pending:
            raise RuntimeError(
                f"{result.still_pending} billing documents are still pending after every round; "
                "retrying the task resumes from the ledger"
            )
        return {"plan": result.plan, "outcome": result.outcome, "documents": result.documents}

    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        from psa_erp_sync.hooks.erp import ErpHook
        from psa_erp_sync.lineage import naming

        namespace = ErpHook(self.erp_conn_id or "erp_default").openlineage_namespace()
        inputs = [self.ods_dataset("billing", "event"), self.ods_dataset("ledger", "posting")]
        outputs = [
            naming.erp_record(namespace, "invoice"),
            naming.erp_record(namespace, "creditmemo"),
            self.ods_dataset("billing", "document"),
            self.ods_dataset("billing", "event"),
            self.ods_dataset("ledger", "posting"),
            self.ods_dataset("exceptions", "item"),
        ]
        return inputs, outputs
