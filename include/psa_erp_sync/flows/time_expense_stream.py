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


# The asset-triggered path is the safety net of the long-running consumer
# (``time_expense_stream_consumer``): it takes time and expense events only once they have waited
# this long unclaimed (a consumer claims them within a second), so the two paths do not race for
# fresh events. Milestones have no consumer: they start a run at once.
SAFETY_NET_DELAY_S = 20.0


def inbox_asset() -> Asset:
    """The asset the stream DAG is scheduled on: PSA time, expense and milestone events in the
    inbox. Two watchers: milestones at once, time and expenses left unclaimed for
    :data:`SAFETY_NET_DELAY_S`."""
    from airflow.sdk import AssetWatcher

    from psa_erp_sync.flows import INBOX_POLL_SECONDS
    from psa_erp_sync.flows import inbox_asset as watched
    from psa_erp_sync.triggers.inbox import InboxArrivalTrigger

    asset = watched(ASSET_NAME, "inbox_milestone_arrivals", "psa", list(MILESTONE_EVENTS))
    asset.watchers.append(
        AssetWatcher(
            name="inbox_time_expense_arrivals",
            trigger=InboxArrivalTrigger(
                ods_conn_id="ods_default",
                source_system="psa",
                event_types=list(TIME_EXPENSE_EVENTS),
                poll_seconds=INBOX_POLL_SECONDS,
                min_age_seconds=SAFETY_NET_DELAY_S,
            ),
        )
    )
    return asset


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
        op_kwargs={"claim_min_age_s": SAFETY_NET_DELAY_S},  # fresh events are the consumer's
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


# The consumer task's lifetime (seconds) and NOTIFY-wait fallback; an Airflow Variable overrides
# the lifetime at run time (templated: nothing is read at parse time).
CONSUMER_LIFETIME = "{{ var.value.get('psa_erp_sync_stream_consumer_lifetime_s', 600) }}"
CONSUMER_POLL_S = 1.0


def build_consumer() -> None:
    """Declare the consumer DAG's one task (call inside a DAG context): the inbox consumer runs for
    its lifetime, posting each burst as it arrives (``psa_erp_sync.stream.consumer``)."""
    from datetime import timedelta

    from psa_erp_sync.contracts.kinds import KINDS
    from psa_erp_sync.lineage.refs import ods, psa, routed_erp
    from psa_erp_sync.operators.step import DomainStepOperator
    from psa_erp_sync.stream import steps as stream_steps

    # No ERP account pool: the task holds no posting slot while it waits (it would starve the
    # batch's posting tasks for its whole lifetime); each burst takes the posting lock and the
    # account's request budget like any pass.
    DomainStepOperator(
        task_id="consume_inbox",
        call=stream_steps.consume_step,
        step="stream",
        op_kwargs={"lifetime_s": CONSUMER_LIFETIME, "poll_s": CONSUMER_POLL_S},
        # The lifetime plus room for the last burst; a hung task is failed and retried.
        execution_timeout=timedelta(minutes=30),
        retry_delay=timedelta(seconds=5),
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
