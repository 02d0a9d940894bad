"""
### Approved time and expenses, event-driven: PSA webhooks -> inbox -> ERP in seconds

**Owner:** finance-integration · **Domain:** time & expense

Signed PSA webhooks land in the ODS `inbox` through the ingress on the API server
(`/ingress/psa/events`). An `AssetWatcher` with `InboxArrivalTrigger` (LISTEN/NOTIFY plus a
polling fallback, in the triggerer) updates the asset `psa_erp_sync.inbox.time_expense` when
events arrive, and each update starts a run here. The run claims the pending batch
(`FOR UPDATE SKIP LOCKED`), re-reads every announced record from the PSA by id, and stages,
validates and posts it through the same idempotent ledger as `time_expense_posting`. Beside it,
`bill_milestones` claims `milestone.completed` events, re-reads each milestone and turns a
signed-off one into a billing event (`docs/billing.md`, "Billing events").

**Schedule:** on the inbox asset (event-driven). Webhooks can be lost, duplicated or
reordered, so this DAG only makes the ERP current sooner: the scheduled
`time_expense_posting` sweep stays the safety net and the source of truth.

**Operators:** retrying or clearing the task is safe: claims belong to the run, staging dedupes
by content hash and the posting ledger by idempotency key. See `docs/streaming.md`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from psa_erp_sync.flows import DEFAULT_ARGS, owner_digest, time_expense_stream


@dag(
    dag_id="time_expense_stream",
    schedule=[time_expense_stream.inbox_asset()],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=3,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    **owner_digest(),  # each owner of new exception items gets one digest per run
    tags=["domain:time-expense", "psa", "erp", "financial", "stream"],
)
def time_expense_stream_dag() -> None:
    time_expense_stream.build()


time_expense_stream_dag()
