"""Dead-letter replay: check the request -> select -> (dry run: list) -> finance approval when the
replay is large -> release -> post through the same operator."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, task

from psa_erp_sync.contracts.kinds import TIME_ENTRY, record_type_labels

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
            TIME_ENTRY.record_type,
            enum=[*record_type_labels(), "invoice", "creditmemo"],
            values_display={
                **record_type_labels(),
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


def build() -> None:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    from psa_erp_sync.hooks.erp import account_pool
    from psa_erp_sync.lineage.refs import ods
    from psa_erp_sync.operators.posting import IdempotentPostingOperator
    from psa_erp_sync.operators.step import DomainStepOperator
    from psa_erp_sync.posting import replay_steps

    selected = DomainStepOperator(
        task_id="select_dead_letters",
        call=replay_steps.select_step,
        check_params=replay_steps.check_request,
        no_retry_on=[replay_steps.ReplayRequestRefused],
        inputs=[ods("exceptions.item"), ods("ledger.posting")],
    )

    @task.branch(task_id="route")
    def route(selected: Any) -> list[str]:  # the selection (an XComArg when wired)
        """Dry run or nothing matched: stop. Over the approval limits: ask finance. Else: release."""
        step = replay_steps.next_step(selected)
        return [] if step is None else [APPROVAL_TASK if step == "approval" else NO_APPROVAL_TASK]

    routed = route(selected.output)
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
    # Its upstreams are the two branches only (the selection and the approval come by XCom pull,
    # not as XComArgs): a dry run skips both, so it is skipped too; an approval or the no-approval
    # path lets it run; a rejection skips it.
    released = DomainStepOperator(
        task_id="release_for_posting",
        call=replay_steps.release_step,
        pull={"selected": "select_dead_letters", "approval": APPROVAL_TASK},
        check_params=replay_steps.check_request,
        no_retry_on=[replay_steps.ReplayRequestRefused],
        trigger_rule="none_failed_min_one_success",
        inputs=[ods("exceptions.item"), ods("ledger.posting")],
        outputs=[ods("ledger.posting"), ods("exceptions.item"), ods("audit.change")],
    )
    post = IdempotentPostingOperator(
        task_id="post_replayed", record_type="{{ params.record_type }}", pool=account_pool()
    )
    routed >> [approval, no_approval]
    [approval, no_approval] >> released >> post
