"""
### Invoice status back to the PSA: the daily sweep

**Owner:** finance-integration · **Domain:** billing

The ERP owns invoices; the PSA shows them so delivery and account managers see what was billed
and paid. This sweep reads every ERP invoice modified since the last sweep minus an overlap
window (payments and credits move an invoice's `lastModifiedDate`) and mirrors each as a Harvest
invoice: created once per ERP invoice (keyed by its external id in `billing.psa_invoice`), its
time entries and expenses marked billed, payments recorded, state moved forward only (draft ->
open -> paid, or closed on void or full credit).

**Schedule:** daily at 04:30 UTC. ERP `invoice.created` / `invoice.paid` webhooks already make the
PSA current within seconds (`billing_status_stream`); webhooks can be lost, so this sweep is the
safety net. The first sweep reads every ERP invoice.

**Operators:** retrying or clearing is safe: every step re-reads the ERP and the PSA and only
moves the PSA forward; the watermark advances only after a sweep without failures. See
`docs/billing.md`, "Invoice status back to the PSA".
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from psa_erp_sync.flows import DEFAULT_ARGS, billing_status, owner_digest


@dag(
    dag_id="billing_status",
    schedule="30 4 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    **owner_digest(),
    tags=["domain:billing", "psa", "erp", "financial"],
)
def billing_status_dag() -> None:
    billing_status.build_sweep()


billing_status_dag()
