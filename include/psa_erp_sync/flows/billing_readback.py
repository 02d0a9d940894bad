"""Billing read-back: ERP invoices, credit memos, payments and journals -> ODS (``billing.erp_*``).

Task graph (built by :func:`build`)::

    read_back_invoice -> read_back_creditmemo -> read_back_customerpayment -> read_back_journalentry

Each task reads ``lastmodifieddate >= watermark - overlap`` (the overlap of every extract,
``config/mappings.yaml`` ``extract.overlap_minutes``) and upserts what changed
(:mod:`psa_erp_sync.billing.readback`); a retried or cleared task re-reads harmlessly.
"""

from __future__ import annotations

from typing import Any

from psa_erp_sync.flows import default_args

DEFAULT_ARGS: dict[str, Any] = default_args("billing")


def build() -> None:
    """Declare the read-back tasks, one per ERP billing record type (call inside a DAG context)."""
    from psa_erp_sync.billing import steps
    from psa_erp_sync.billing.readback import RECORD_TYPES
    from psa_erp_sync.lineage.refs import erp, erp_in_force, ods
    from psa_erp_sync.operators.step import DomainStepOperator

    tables = {
        "invoice": ["billing.erp_invoice", "billing.erp_invoice_line"],
        "creditmemo": ["billing.erp_invoice", "billing.erp_invoice_line"],
        "customerpayment": ["billing.erp_payment", "billing.erp_payment_application"],
        "journalentry": ["billing.erp_journal", "billing.erp_journal_line"],
    }
    # Invoices and credit memos map their ERP job to a PSA project (master.project_setup).
    mapping = {t: [ods("master.project_setup")] for t in ("invoice", "creditmemo")}
    # NetSuite is always read; SAP's customer documents too while the routing in force names SAP
    # (resolved when lineage is asked for). SAP holds no journal entries of ours to read here.
    sap = {t: [erp_in_force("sap", t)] for t in ("invoice", "creditmemo", "customerpayment")}
    previous = None
    for record_type in RECORD_TYPES:
        current = DomainStepOperator(
            task_id=f"read_back_{record_type}",
            call=steps.read_back_step,
            op_kwargs={"record_type": record_type},
            inputs=[
                erp(record_type),
                erp("transactionline"),
                *sap.get(record_type, []),
                *mapping.get(record_type, []),
            ],
            outputs=[ods(t) for t in [*tables[record_type], "billing.erp_readback_watermark"]],
            step=f"billing_readback:{record_type}",
        )
        if previous is not None:
            previous >> current
        previous = current
