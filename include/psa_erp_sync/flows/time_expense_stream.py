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

import logging
from typing import Any

from airflow.sdk import Asset, AssetWatcher, get_current_context

from psa_erp_sync.flows.context import ids, run_as_of
from psa_erp_sync.ods.inbox import MILESTONE_EVENTS, TIME_EXPENSE_EVENTS

log = logging.getLogger(__name__)

ASSET_NAME = "psa_erp_sync.inbox.time_expense"
POLL_SECONDS = 5.0  # LISTEN/NOTIFY wakes the trigger at once; polling is only the fallback


def inbox_asset() -> Asset:
    """The asset the stream DAG is scheduled on (no I/O: the trigger only connects in the triggerer)."""
    from psa_erp_sync.triggers.inbox import InboxArrivalTrigger

    trigger = InboxArrivalTrigger(
        ods_conn_id="ods_default",
        source_system="psa",
        event_types=[*TIME_EXPENSE_EVENTS, *MILESTONE_EVENTS],
        poll_seconds=POLL_SECONDS,
    )
    return Asset(
        name=ASSET_NAME,
        uri="psa-erp-sync://ods/inbox/time_expense",
        watchers=[AssetWatcher(name="inbox_time_expense_arrivals", trigger=trigger)],
    )


def _process() -> dict[str, Any]:
    from psa_erp_sync.config import load_config
    from psa_erp_sync.hooks.erp import ErpHook
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.hooks.psa import PsaHook
    from psa_erp_sync.posting.engine import EngineSettings
    from psa_erp_sync.stream.time_expense import process_inbox

    context = get_current_context()
    dag_id, run_id = ids(context)
    config = load_config()
    erp_hook = ErpHook()
    settings = EngineSettings.from_config(
        config,
        max_concurrency=erp_hook.max_concurrency(),
        progress_every_s=60.0,
    )
    with PsaHook().get_client() as psa, erp_hook.get_client() as erp:
        result = process_inbox(
            dsn=OdsHook().dsn(),
            psa_client=psa,
            erp_client=erp,
            config=config,
            run_id=run_id,
            run_key_prefix=f"{dag_id}/{run_id}",
            as_of=run_as_of(context),
            engine_settings=settings,
        )
    return result.as_dict()


def _bill_milestones() -> dict[str, Any]:
    from psa_erp_sync.billing.milestones import process_milestone_inbox
    from psa_erp_sync.billing.settings import load_billing_settings
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.hooks.psa import PsaHook

    context = get_current_context()
    _dag_id, run_id = ids(context)
    with PsaHook().get_client() as psa, OdsHook().get_conn() as conn:
        result = process_milestone_inbox(
            conn, psa, config=load_billing_settings(), as_of=run_as_of(context).date(), run_id=run_id
        )
    return result.as_dict()


def build() -> None:
    """Declare the stream DAG's task (call inside a DAG context)."""
    from psa_erp_sync.hooks.erp import account_pool
    from psa_erp_sync.lineage.refs import erp, ods, psa
    from psa_erp_sync.operators.python import ReportingPythonOperator

    # Claim pending time & expense events; re-read, stage, validate and post the records (the
    # return value is one XCom, as PythonOperator pushes it whole).
    ReportingPythonOperator(
        task_id="process_inbox",
        python_callable=_process,
        pool=account_pool(),  # it posts: one of the ERP account's posting tasks
        step="stream",
        inputs=[
            ods("inbox.event"),
            psa("/v2/time_entries"),
            psa("/v2/expenses"),
            ods("staging.raw_record"),
            ods("canonical.time_entry"),
            ods("canonical.expense_entry"),
            ods("ledger.posting"),
        ],
        outputs=[
            ods("inbox.event"),
            ods("staging.raw_record"),
            ods("canonical.time_entry"),
            ods("canonical.expense_entry"),
            ods("exceptions.item"),
            ods("ledger.posting"),
            erp("timebill"),
            erp("expensereport"),
        ],
    )
    # Signed-off milestones -> billing events (PSA and ODS only: no ERP call, no posting pool).
    ReportingPythonOperator(
        task_id="bill_milestones",
        python_callable=_bill_milestones,
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
