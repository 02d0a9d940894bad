"""Month-end: wait (deferred) until every legal entity's current ERP period is open, then sweep.

At the turn of the month the ERP's new period may not be open yet; posting would then move or
park the new month's entries. This flow waits for the periods in the triggerer (no worker slot
held) and then starts a sweep of ``time_expense_posting`` so the new month posts at once.
"""

from __future__ import annotations

from datetime import timedelta

LEGAL_ENTITIES = ("LE-US1", "LE-US2", "LE-UK1")


def build() -> None:
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    from psa_erp_sync.sensors.month_end import MonthEndWindowSensor

    waits = [
        MonthEndWindowSensor(
            task_id=f"wait_for_open_period_{code.replace('-', '_').lower()}",
            wait_for="period_open",
            legal_entity=code,
            day="{{ (data_interval_end or dag_run.run_after).strftime('%Y-%m-%d') }}",
            poll_seconds=300,
            timeout=timedelta(hours=18).total_seconds(),
        )
        for code in LEGAL_ENTITIES
    ]
    sweep_time_expense = TriggerDagRunOperator(
        task_id="sweep_time_expense",
        trigger_dag_id="time_expense_posting",
        conf={"mode": "sweep"},
        wait_for_completion=False,
    )
    waits >> sweep_time_expense
