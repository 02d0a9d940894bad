"""
### Approved time and expenses: PSA -> ODS -> ERP

**Owner:** finance-integration · **Domain:** time & expense

Reads approved time entries and expenses from the PSA incrementally (an overlapping
`updated_since` window, never a date-only filter), stages raw payloads by COPY, validates them
into canonical records or quarantines them with a reason code and an owner, and records control
totals: a run fails if `extracted = staged = valid + quarantined` does not hold.

**Schedule:** every 15 minutes; outside month-end close windows (business days -2 .. +3 per
country, `config/close_calendars.yaml`) the `cadence_gate` lets only the top-of-the-hour run post,
so posting is hourly normally and every 15 minutes during close (the cadence is per environment:
`posting.cadence_minutes` in `config/environments/<env>.yaml`). A wider sweep (re-reading recent spent dates to catch deletions and
unapprovals) runs when the last one is over a day old, or on demand with `mode = sweep`.

**Deadline alerts:** per legal entity, entries approved by 18:00 local on a business day are in the
ERP by 20:00 local the next business day; a run that misses it alerts the entity's owner
(`config/close_deadlines.yaml`, docs/operations.md "Deadline alerts").

**Operators:** retrying or clearing any task is safe: every step is keyed on the run and the
record identity, never on the try number.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from psa_erp_sync.flows import DEFAULT_ARGS, close_deadlines, owner_digest, time_expense


@dag(
    dag_id="time_expense_posting",
    schedule="*/15 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=time_expense.params(),
    doc_md=__doc__,
    **owner_digest(),  # each owner of new exception items gets one digest per run
    **close_deadlines("time_expense_posting"),  # per legal entity: a missed close deadline alerts its owner
    tags=["domain:time-expense", "psa", "erp", "financial"],
)
def time_expense_posting() -> None:
    time_expense.build()


time_expense_posting()
