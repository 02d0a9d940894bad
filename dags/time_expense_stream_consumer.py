"""
### Approved time and expenses, low latency: a long-running inbox consumer

**Owner:** finance-integration · **Domain:** time & expense

One task, `consume_inbox`, runs the inbox consumer for a bounded lifetime (10 minutes; Airflow
Variable `psa_erp_sync_stream_consumer_lifetime_s`) and then ends; the `@continuous` schedule
starts the next run at once, on whichever Celery worker is free. While it runs it LISTENs for the
inbox's NOTIFY and posts each burst within about a second of the webhook: re-read from the PSA by
id, staged, validated and posted through the same idempotent ledger as `time_expense_posting`.

**Safety net:** `time_expense_stream` (asset-triggered) still runs and takes whatever this
consumer did not claim; `time_expense_posting` (scheduled) still reads the PSA itself. A consumer
that dies leaves its claims: a retry of this run takes them back at once, another consumer after
60 s, the asset-triggered run after the inbox's 10-minute lease. See `docs/streaming.md`.

**Operators:** pausing this DAG falls back to the asset-triggered path (events wait about 20 s before it claims them). Clearing
or retrying the task is safe: claims belong to the run, the ledger keys every posting.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from psa_erp_sync.flows import DEFAULT_ARGS, owner_digest, time_expense_stream


@dag(
    dag_id="time_expense_stream_consumer",
    schedule="@continuous",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # required by @continuous; one consumer run at a time
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    **owner_digest(),
    tags=["domain:time-expense", "psa", "erp", "financial", "stream"],
)
def time_expense_stream_consumer_dag() -> None:
    time_expense_stream.build_consumer()


time_expense_stream_consumer_dag()
