"""Event-driven time & expense: the inbox asset, its watcher, and the task that drains the inbox.

The asset is updated by :class:`~psa_erp_sync.triggers.inbox.InboxArrivalTrigger` running in
the triggerer (via ``AssetWatcher``); each asset event starts a run of ``time_expense_stream``,
whose task ``process_inbox`` claims the pending time and expense batch and processes it through
the same staging, validation and idempotent posting as the batch DAG
(:mod:`psa_erp_sync.stream.time_expense`). Beside it, not after it, ``bill_milestones`` claims the
``milestone.completed`` events and turns signed-off milestones into billing events
(:mod:`psa_erp_sync.billing.milestones`): neither waits for nor fails with the other. No more
tasks than that: every task start costs seconds of scheduler latency, and the whole point of this
DAG is latency.
"""

from __future__ import annotations

from airflow.sdk import Asset

from psa_erp_sync.ods.inbox import MILESTONE_EVENTS, TIME_EXPENSE_EVENTS

ASSET_NAME = "psa_erp_sync.inbox.time_expense"


def inbox_asset() -> Asset:
    """The asset the stream DAG is scheduled on: PSA time, expense and milestone events in the inbox."""
    from psa_erp_sync.flows import inbox_asset as watched

    return watched(
        ASSET_NAME, "inbox_time_expense_arrivals", "psa", [*TIME_EXPENSE_EVENTS, *MILESTONE_EVENTS]
    )


def build() -> None:
    """Declare the stream DAG's task (call inside a DAG context)."""
    from psa_erp_sync.billing import steps as billing_steps
    from psa_erp_sync.contracts.kinds import KINDS
    from psa_erp_sync.hooks.erp import account_pool
    from psa_erp_sync.lineage.refs import ods, psa, routed_erp
    from psa_erp_sync.operators.step import DomainStepOperator
    from psa_erp_sync.stream import steps as stream_steps

    # Claim pending time & expense events; re-read, stage, validate and post the records (the
    # return value is one XCom).
    DomainStepOperator(
        task_id="process_inbox",
        call=stream_steps.process_inbox_step,
        pool=account_pool(),  # it posts: one of the ERP account's posting tasks
        step="stream",
        inputs=[
            ods("inbox.event"),
            *(psa(k.psa_endpoint) for k in KINDS.values()),
            ods("staging.raw_record"),
            *(ods(k.canonical_table) for k in KINDS.values()),
            ods("ledger.posting"),
        ],
        outputs=[
            ods("inbox.event"),
            ods("staging.raw_record"),
            *(ods(k.canonical_table) for k in KINDS.values()),
            ods("exceptions.item"),
            ods("ledger.posting"),
            *(routed_erp(k.record_type) for k in KINDS.values()),
        ],
    )
    # Signed-off milestones -> billing events (PSA and ODS only: no ERP call, no posting pool).
    DomainStepOperator(
        task_id="bill_milestones",
        call=billing_steps.bill_milestones_step,
        step="stream",
        inputs=[
            ods("inbox.event"),
            psa("/v2/x/milestones"),
            ods("forecast.src_milestone"),
            ods("forecast.src_project"),
            ods("master.erp_record"),
            ods("billing.milestone_read"),
        ],
        outputs=[ods("inbox.event"), ods("billing.milestone_read"), ods("billing.event")],
    )
