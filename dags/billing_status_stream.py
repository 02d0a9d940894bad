"""
### Invoice status back to the PSA, event-driven: ERP webhooks -> inbox -> PSA in seconds

**Owner:** finance-integration · **Domain:** billing

Signed ERP webhooks `invoice.created` and `invoice.paid` land in the ODS `inbox` through the
ingress on the API server (`/ingress/erp/events`). An `AssetWatcher` with `InboxArrivalTrigger`
updates the asset `psa_erp_sync.inbox.erp_invoices` when they arrive, and each update starts a
run here. The run claims the pending events, re-reads each announced invoice from the ERP (never
trusting the event's payload, so duplicated and reordered deliveries change nothing) and mirrors
it in the PSA: invoice created with its entries billed, payments recorded, state moved forward.

**Schedule:** on the inbox asset (event-driven). The daily `billing_status` sweep is the safety
net for lost webhooks and for partial payments, which the ERP does not announce.

**Operators:** retrying or clearing the task is safe: claims belong to the run and the PSA is
only moved forward. See `docs/billing.md`, "Invoice status back to the PSA".
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from psa_erp_sync.flows import DEFAULT_ARGS, billing_status, owner_digest


@dag(
    dag_id="billing_status_stream",
    schedule=[billing_status.inbox_asset()],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=3,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    **owner_digest(),
    tags=["domain:billing", "psa", "erp", "financial", "stream"],
)
def billing_status_stream_dag() -> None:
    billing_status.build_stream()


billing_status_stream_dag()
