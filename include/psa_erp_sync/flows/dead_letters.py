"""Dead-letter replay: select -> (dry run: list) -> release -> post through the same operator."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from airflow.sdk import Param, get_current_context, task

from psa_erp_sync.flows.context import ids

log = logging.getLogger(__name__)

PARAMS = {
    "dry_run": Param(
        True, type="boolean", description="List what would be replayed; change nothing. Untick to replay."
    ),
    "record_type": Param(
        "timebill",
        enum=["timebill", "expensereport"],
        values_display={"timebill": "Time entries (timebill)", "expensereport": "Expenses (expensereport)"},
    ),
    "owner": Param(
        None, type=["null", "string"], description="Only items of this owner (config/ownership.yaml)."
    ),
    "reason_code": Param(
        None,
        type=["null", "string"],
        description="Only this reason, e.g. INVALID_KEY_OR_REF or PERIOD_CLOSED.",
    ),
    "date_from": Param(
        None, type=["null", "string"], format="date", description="Entries dated on or after."
    ),
    "date_to": Param(None, type=["null", "string"], format="date", description="Entries dated on or before."),
    "source_ids": Param([], type="array", items={"type": "string"}, description="Only these PSA ids."),
}


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


def build() -> None:
    from airflow.providers.standard.operators.python import ShortCircuitOperator

    from psa_erp_sync.hooks.erp import account_pool
    from psa_erp_sync.operators.posting import IdempotentPostingOperator

    @task(task_id="select_dead_letters")
    def select_dead_letters(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """What matches the filter, grouped by cause; the dry run stops here."""
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.lineage.collect import report_ods
        from psa_erp_sync.posting import replay

        params = params or {}
        ods = OdsHook()
        report_ods(ods, inputs=[("exceptions", "item"), ("ledger", "posting")])
        with ods.get_conn() as conn:
            rows = replay.select(conn, _filter(params))
        groups: dict[str, int] = {}
        for row in rows:
            groups[f"{row['owner']}/{row['reason_code']}"] = (
                groups.get(f"{row['owner']}/{row['reason_code']}", 0) + 1
            )
        for row in rows[:200]:
            log.info(
                "would replay %s %s (%s, %s, %s)", row["external_id"], row["reason_code"], row["owner"],
                row["spent_date"], row["state"],
            )  # fmt: skip
        log.info("%d items match: %s", len(rows), groups)
        return {
            "matched": len(rows),
            "by_owner_and_reason": groups,
            "dry_run": bool(params.get("dry_run", True)),
        }

    @task(task_id="release_for_posting")
    def release_for_posting(params: dict[str, Any] | None = None) -> int:
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.lineage.collect import report_ods
        from psa_erp_sync.posting import replay

        context = get_current_context()
        dag_id, run_id = ids(context)
        ods = OdsHook()
        report_ods(
            ods,
            inputs=[("exceptions", "item"), ("ledger", "posting")],
            outputs=[("ledger", "posting"), ("exceptions", "item"), ("audit", "change")],
        )
        with ods.get_conn() as conn, conn.transaction():
            rows = replay.select(conn, _filter(params or {}))
            released = replay.release(conn, rows, run_id=run_id, actor=f"{dag_id}.release_for_posting")
        log.info("released %d postings for replay", released)
        return released

    selected = select_dead_letters()
    unless_dry_run = ShortCircuitOperator(
        task_id="unless_dry_run",
        python_callable=lambda matched: (not matched["dry_run"]) and matched["matched"] > 0,
        op_args=[selected],
    )
    post = IdempotentPostingOperator(
        task_id="post_replayed", record_type="{{ params.record_type }}", pool=account_pool()
    )
    unless_dry_run >> release_for_posting() >> post
