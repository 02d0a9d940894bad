"""Month-end: wait (deferred) until every legal entity's current ERP period is open, then sweep;
beside it, the close report of the month that ended.

At the turn of the month the ERP's new period may not be open yet; posting would then move or
park the new month's entries. This flow waits for the periods in the triggerer (no worker slot
held) and then starts a sweep of ``time_expense_posting`` so the new month posts at once.

``close_report`` (independent of the waits) computes, per legal entity, the close report of the
month before the run's as-of (:func:`psa_erp_sync.reconcile.close_html.close_report_step`): stored
in ``close.report``, written as HTML and JSON, and failing the task when a reconciliation differs.
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
    close_report()


def close_report() -> None:
    """The close report task (call inside a DAG context)."""
    from psa_erp_sync.contracts.kinds import KINDS
    from psa_erp_sync.lineage.refs import erp, ods
    from psa_erp_sync.operators.step import DomainStepOperator
    from psa_erp_sync.reconcile import close_html

    DomainStepOperator(
        task_id="close_report",
        call=close_html.close_report_step,
        step="close_report",
        inputs=[
            *(ods(k.canonical_table) for k in KINDS.values()),
            ods("ledger.posting"),
            ods("revenue.recognition"),
            ods("revenue.journal"),
            ods("billing.event"),
            ods("billing.document"),
            ods("billing.erp_invoice"),
            ods("billing.erp_journal"),
            ods("exceptions.item"),
            *(erp(k.record_type) for k in KINDS.values()),
        ],
        outputs=[ods("close.report")],
    )
