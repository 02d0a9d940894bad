"""Approved time and expenses: PSA -> staging -> canonical (or quarantine) -> control totals.

Task graph (built by :func:`build`)::

    cadence_gate -> (each extract)
    extract_reference ─┐
    extract_time ──────┼─> validate_time ────┐
    extract_expenses ──┴─> validate_expenses ┴─> reconcile -> precheck_projects -> post_timebills
        -> post_expense_reports -> reconcile_erp
                                -> reconcile_parallel_run (parallel runs of erp_routing.yaml)

Run keys are derived from (dag_id, run_id, endpoint), so a retried or cleared task works on the
same staged set; every step is idempotent.

Wiring only: each step is an operator of :mod:`psa_erp_sync.operators` that reads what it needs
from its own context and calls domain code (extract/, validation/, reconcile/, posting/); the
cadence gate calls :func:`psa_erp_sync.calendar.cadence.gate`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param


def params() -> dict[str, Param]:
    """The trigger form's parameters, built afresh for each DAG: Airflow writes a run's conf into
    the Param objects it is given, so objects shared between DAGs would carry one run's values
    into the next."""
    return {
        "mode": Param(
            "auto",
            enum=["auto", "incremental", "sweep"],
            values_display={
                "auto": "Auto (incremental; sweep when the last sweep is over a day old)",
                "incremental": "Incremental (updated_since with overlap)",
                "sweep": "Sweep (re-read spent dates, catches deletions)",
            },
            description="How to read the PSA.",
        ),
    }


# A posting try lost with its worker (heartbeat timeout) resumes soon: the ledger makes a retry
# safe, and month-end close runs every 15 minutes. Backoff still doubles from here.
POSTING_RETRY_DELAY = timedelta(seconds=10)


def build() -> None:
    """Declare the tasks of the time & expense DAG (call inside a DAG context)."""

    from psa_erp_sync import assets
    from psa_erp_sync.calendar import cadence
    from psa_erp_sync.contracts.kinds import EXPENSE_ENTRY, REFERENCE_ENDPOINTS, TIME_ENTRY
    from psa_erp_sync.hooks.erp import account_pool
    from psa_erp_sync.operators.erp_validation import ProjectPrecheckOperator
    from psa_erp_sync.operators.gate import DomainGateOperator
    from psa_erp_sync.operators.posting import IdempotentPostingOperator, ParallelRunReconciliationOperator
    from psa_erp_sync.operators.time_expense import (
        ControlTotalsOperator,
        ErpReconciliationOperator,
        PsaExtractOperator,
        StagedRecordValidationOperator,
    )

    # Post on this run? Hourly outside close windows, every 15 minutes inside; manual and
    # asset-triggered runs always. A run that does not post skips everything after the gate.
    gate = DomainGateOperator(task_id="cadence_gate", call=cadence.gate)
    # Projects, users, task assignments, expense categories: the reference a run validates against.
    reference = PsaExtractOperator(
        task_id="extract_reference", endpoints=list(REFERENCE_ENDPOINTS), mode="full"
    )
    # Time entries and expenses changed since the watermark (minus overlap), or a sweep of recent dates.
    time_extract = PsaExtractOperator(
        task_id="extract_time_entries", endpoints=[TIME_ENTRY.psa_endpoint], mode="{{ params.mode }}"
    )
    expense_extract = PsaExtractOperator(
        task_id="extract_expenses", endpoints=[EXPENSE_ENTRY.psa_endpoint], mode="{{ params.mode }}"
    )
    gate >> [reference, time_extract, expense_extract]
    validated_time = StagedRecordValidationOperator(task_id="validate_time_entries", kind="time_entry")
    validated_expenses = StagedRecordValidationOperator(task_id="validate_expenses", kind="expense_entry")
    [reference, time_extract] >> validated_time
    [reference, expense_extract] >> validated_expenses
    checked = ControlTotalsOperator(
        task_id="reconcile",
        extracted=[time_extract.output, expense_extract.output],
        validated=[validated_time.output, validated_expenses.output],
    )
    [validated_time, validated_expenses] >> checked
    # One after the other: each uses the ERP account's whole concurrency budget, which is shared
    # (with the stream and replays too: the account's pool and request budget, docs/posting.md).
    pool = account_pool()
    post_time = IdempotentPostingOperator(
        task_id="post_timebills",
        record_type=TIME_ENTRY.record_type,
        pool=pool,
        retry_delay=POSTING_RETRY_DELAY,
    )
    post_expenses = IdempotentPostingOperator(
        task_id="post_expense_reports",
        record_type=EXPENSE_ENTRY.record_type,
        pool=pool,
        retry_delay=POSTING_RETRY_DELAY,
    )
    # Blocked projects (inactive job or customer, wrong subsidiary or currency) are named, with an
    # owner, before the ERP rejects their entries one by one.
    precheck = ProjectPrecheckOperator(task_id="precheck_projects")
    # The posting asset (the forecast refreshes on it) is published once the ERP is proven to equal
    # the approved PSA set.
    reconcile_erp = ErpReconciliationOperator(task_id="reconcile_erp", outlets=[assets.POSTING])
    checked >> precheck >> post_time >> post_expenses >> reconcile_erp
    # A parallel run (config/erp_routing.yaml) is reconciled from both ERPs' read-backs after both
    # passes; a difference fails this task (docs/multi-erp.md "Parallel run"). Without a parallel
    # run in force it calls no ERP.
    post_expenses >> ParallelRunReconciliationOperator(task_id="reconcile_parallel_run")
