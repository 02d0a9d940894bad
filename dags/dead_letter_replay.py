"""
### Dead-letter replay

**Owner:** finance-integration · **Domain:** time & expense (exceptions)

Replays postings the ERP rejected (dead letters) or that were parked for a closed period, after
master data or a mapping has been fixed. Trigger it from the UI form: filter by owner, reason
code, date range or PSA ids. **Dry run is on by default**: the first task lists what would be
replayed, grouped by owner and reason; untick `dry_run` to replay. Replayed records go through
the same `IdempotentPostingOperator` as the scheduled DAG, so nothing can post twice.

**Schedule:** none (manual only).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from psa_erp_sync.flows import DEFAULT_ARGS, dead_letters, owner_digest


@dag(
    dag_id="dead_letter_replay",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=dead_letters.params(),
    doc_md=__doc__,
    **owner_digest(),  # each owner of new exception items gets one digest per run
    tags=["domain:time-expense", "exceptions", "erp", "financial"],
)
def dead_letter_replay() -> None:
    dead_letters.build()


dead_letter_replay()
