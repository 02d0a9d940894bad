"""Dead-letter replay: check the request -> select -> (dry run: list) -> finance approval when the
replay is large -> release -> post through the same operator."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

from airflow.sdk import Param, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from psa_erp_sync.flows.context import ids

log = logging.getLogger(__name__)

APPROVAL_TASK = "finance_approval"
NO_APPROVAL_TASK = "no_approval_needed"
# How long a large replay waits for finance before the approval times out (the run then fails and
# nothing is released).
APPROVAL_TIMEOUT = timedelta(days=3)
# Record-level rejection codes of the ERP (NetSuite's `o:errorDetails[].o:errorCode`) a dead letter
# can carry, besides the reason codes of config/ (PERIOD_CLOSED parks, the rest dead-letter).
ERP_REJECTION_CODES = (
    "INVALID_KEY_OR_REF",
    "INVALID_FLD_VALUE",
    "INVALID_FIELD",
    "MISSING_REQUIRED_FIELD",
    "INACTIVE_RECORD",
    "NONEXISTENT_ID",
    "DUP_RCRD",
    "TAX_CODE_MISMATCH",
    "INVALID_CONTENT",
    "UNKNOWN",
)


def _choices() -> tuple[list[str], dict[str, str]]:
    """Owners (``config/ownership.yaml``) and reason codes (``config/`` and the ERP's) for the
    trigger form's dropdowns: a typo can no longer silently match nothing. Reads local YAML only."""
    from psa_erp_sync.config import load_config

    config = load_config()
    owners = sorted({config.ownership.default, *(rule.owner for rule in config.ownership.owners)})
    reasons = {code: code for code in ERP_REJECTION_CODES}
    for codes in (config.ownership.reason_codes, config.authority.reason_codes):
        reasons.update({code: f"{code}: {entry.fix[:80]}" for code, entry in codes.items()})
    return owners, dict(sorted(reasons.items()))


def params() -> dict[str, Param]:
    """The trigger form's parameters, built afresh for each DAG: Airflow writes a run's conf into
    the Param objects it is given, so objects shared between DAGs would carry one run's values
    (a filter, ``dry_run: false``) into the next."""
    owners, reasons = _choices()
    return {
        "dry_run": Param(
            True, type="boolean", description="List what would be replayed; change nothing. Untick to replay."
        ),
        "record_type": Param(
            "timebill",
            enum=["timebill", "expensereport", "invoice", "creditmemo"],
            values_display={
                "timebill": "Time entries (timebill)",
                "expensereport": "Expenses (expensereport)",
                "invoice": "Invoices (billing documents)",
                "creditmemo": "Credit memos (billing documents)",
            },
        ),
        "owner": Param(
            None,
            type=["null", "string"],
            enum=[None, *owners],
            values_display={o: o for o in owners},
            description="Only items of this owner (config/ownership.yaml).",
        ),
        "reason_code": Param(
            None,
            type=["null", "string"],
            enum=[None, *reasons],
            values_display=reasons,
            description="Only this reason (config/ reason codes and the ERP's rejection codes).",
        ),
        "date_from": Param(
            None, type=["null", "string"], format="date", description="Entries dated on or after."
        ),
        "date_to": Param(
            None, type=["null", "string"], format="date", description="Entries dated on or before."
        ),
        "source_ids": Param(
            [],
            type="array",
            items={"type": "string"},
            description="Only these PSA ids (billing documents: their document refs, inv-... / cm-...).",
        ),
        "replay_everything": Param(
            False,
            type="boolean",
            description="Required for a real replay with no filter at all (every open dead letter and parked"
            " posting of the record type).",
        ),
    }


class ReplayRequestRefused(AirflowFailException):
    """The trigger's parameters do not describe a replay that may run (the task fails at once,
    without retries: trigger again with a corrected request)."""


def _filter(params: dict[str, Any]) -> Any:
    from psa_erp_sync.posting.replay import ReplayFilter

    return ReplayFilter(
        record_type=params.get("record_type") or "timebill",
        owner=params.get("owner") or None,
        reason_code=params.get("reason_code") or None,
        date_from=date.fromisoformat(params["date_from"]) if params.get("date_from") else None,
        date_to=date.fromisoformat(params["date_to"]) if params.get("date_to") else None,
        source_ids=tuple(params.get("source_ids") or ()),
    )


def check_request(params: dict[str, Any]) -> Any:
    """The filter of a replay request, or ``ReplayRequestRefused`` naming what is wrong."""
    f = _filter(params)
    if f.date_from and f.date_to and f.date_from > f.date_to:
        raise ReplayRequestRefused(
            f"date_from {f.date_from} is after date_to {f.date_to}: nothing could match"
        )
    unfiltered = not (f.owner or f.reason_code or f.date_from or f.date_to or f.source_ids)
    if unfiltered and not params.get("dry_run", True) and not params.get("replay_everything"):
        raise ReplayRequestRefused(
            "a real replay with no filter would release every open dead letter and parked posting:"
            " choose an owner, reason, dates or ids, or tick replay_everything"
        )
    return f


def _select_dead_letters(params: dict[str, Any] | None) -> dict[str, Any]:
    """The ``select_dead_letters`` task: what matches the filter, grouped by cause, with amounts."""
    from psa_erp_sync.config import load_config
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.lineage.collect import report_ods
    from psa_erp_sync.posting import replay

    params = params or {}
    f = check_request(params)
    ods = OdsHook()
    report_ods(ods, inputs=[("exceptions", "item"), ("ledger", "posting")])
    with ods.get_conn() as conn:
        rows = replay.select(conn, f)
    summary = replay.summarize(rows)
    for row in rows[:200]:
        log.info(
            "would replay %s %s (%s, %s, %s)",
            row["external_id"],
            row["reason_code"],
            row["owner"],
            row["spent_date"],
            row["state"],
        )
    approval = load_config().mappings.replay.needs_approval(summary["matched"], summary["amounts_minor"])
    log.info(
        "%d items match: %s; amounts %s",
        summary["matched"],
        summary["by_owner_and_reason"],
        summary["amounts"],
    )
    if approval:
        log.info("a real replay of this selection waits for a finance approval: %s", "; ".join(approval))
    return {**summary, "dry_run": bool(params.get("dry_run", True)), "needs_approval": approval}


def build() -> None:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    from psa_erp_sync.hooks.erp import account_pool
    from psa_erp_sync.operators.posting import IdempotentPostingOperator

    @task(task_id="select_dead_letters")
    def select_dead_letters(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """What matches the filter, grouped by cause, with amounts; the dry run stops here."""
        return _select_dead_letters(params)

    @task.branch(task_id="route")
    def route(selected: Any) -> list[str]:  # the selection (an XComArg when wired)
        """Dry run or nothing matched: stop. Over the approval limits: ask finance. Else: release."""
        if selected["dry_run"] or selected["matched"] == 0:
            return []
        return [APPROVAL_TASK] if selected["needs_approval"] else [NO_APPROVAL_TASK]

    # Its upstreams are the two branches only (the selection comes by xcom_pull, not as an
    # argument): a dry run skips both, so it is skipped too; an approval or the no-approval path
    # lets it run; a rejection skips it.
    @task(task_id="release_for_posting", trigger_rule="none_failed_min_one_success")
    def release_for_posting(params: dict[str, Any] | None = None) -> int:
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.lineage.collect import report_ods
        from psa_erp_sync.posting import replay

        context = get_current_context()
        dag_id, run_id = ids(context)
        selected = context["ti"].xcom_pull(task_ids="select_dead_letters")
        approval = context["ti"].xcom_pull(task_ids=APPROVAL_TASK) if selected["needs_approval"] else None
        approver = replay.approver_of(approval)
        if selected["needs_approval"] and approver is None:
            raise ReplayRequestRefused("this replay needs a finance approval and none was recorded")
        ods = OdsHook()
        report_ods(
            ods,
            inputs=[("exceptions", "item"), ("ledger", "posting")],
            outputs=[("ledger", "posting"), ("exceptions", "item"), ("audit", "change")],
        )
        with ods.get_conn() as conn, conn.transaction():
            rows = replay.select(conn, check_request(params or {}))
            replay.check_within(replay.summarize(rows), selected)
            actor = f"{dag_id}.release_for_posting" + (f" approved by {approver}" if approver else "")
            released = replay.release(conn, rows, run_id=run_id, actor=actor)
            if approver:
                replay.record_approval(
                    conn, approver=approver, summary=selected, run_id=run_id, dag_id=dag_id
                )
        log.info(
            "released %d postings for replay%s", released, f" (approved by {approver})" if approver else ""
        )
        return released

    selected = select_dead_letters()
    routed = route(selected)
    approval = ApprovalOperator(
        task_id=APPROVAL_TASK,
        subject="Approve a dead-letter replay of {{ ti.xcom_pull(task_ids='select_dead_letters')['matched'] }}"
        " {{ params.record_type }} records",
        body="**Why an approval:** {{ ti.xcom_pull(task_ids='select_dead_letters')['needs_approval'] | join('; ') }}\n\n"
        "**Amounts:** {{ ti.xcom_pull(task_ids='select_dead_letters')['amounts'] }}\n\n"
        "**By owner / reason:** {{ ti.xcom_pull(task_ids='select_dead_letters')['by_owner_and_reason'] }}\n\n"
        "**Filter:** owner={{ params.owner }}, reason={{ params.reason_code }}, dates={{ params.date_from }}"
        "..{{ params.date_to }}, ids={{ params.source_ids | length }}",
        response_timeout=APPROVAL_TIMEOUT,
    )
    no_approval = EmptyOperator(task_id=NO_APPROVAL_TASK)
    released = release_for_posting()
    post = IdempotentPostingOperator(
        task_id="post_replayed", record_type="{{ params.record_type }}", pool=account_pool()
    )
    routed >> [approval, no_approval]
    [approval, no_approval] >> released >> post
