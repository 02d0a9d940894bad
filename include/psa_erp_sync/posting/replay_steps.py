"""The dead_letter_replay DAG's steps as plain functions: the trigger form's request checked and
turned into a :class:`~psa_erp_sync.posting.replay.ReplayFilter`, the selection (what would be
replayed, grouped by cause, with amounts, and whether finance must approve it) and the release.
Each takes the ODS connection and the run facts it needs as explicit arguments
(``DomainStepOperator`` supplies them by name) and calls :mod:`~psa_erp_sync.posting.replay`."""

from __future__ import annotations

import logging
from datetime import date
from typing import TYPE_CHECKING, Any

from psa_erp_sync.posting import replay

if TYPE_CHECKING:
    import psycopg

    from psa_erp_sync.config import Config

log = logging.getLogger(__name__)


class ReplayRequestRefused(ValueError):
    """The trigger's parameters do not describe a replay that may run (the step fails at once,
    without retries: trigger again with a corrected request)."""


def replay_filter(params: dict[str, Any]) -> replay.ReplayFilter:
    """The filter the trigger form's parameters describe."""
    return replay.ReplayFilter(
        record_type=params.get("record_type") or "timebill",
        owner=params.get("owner") or None,
        reason_code=params.get("reason_code") or None,
        date_from=date.fromisoformat(params["date_from"]) if params.get("date_from") else None,
        date_to=date.fromisoformat(params["date_to"]) if params.get("date_to") else None,
        source_ids=tuple(params.get("source_ids") or ()),
    )


def check_request(params: dict[str, Any]) -> replay.ReplayFilter:
    """The filter of a replay request, or ``ReplayRequestRefused`` naming what is wrong."""
    f = replay_filter(params)
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


def select_step(conn: psycopg.Connection, *, params: dict[str, Any], config: Config) -> dict[str, Any]:
    """What matches the filter, grouped by cause, with amounts; the dry run stops here."""
    f = check_request(params)
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
    approval = config.mappings.replay.needs_approval(summary["matched"], summary["amounts_minor"])
    log.info(
        "%d items match: %s; amounts %s",
        summary["matched"],
        summary["by_owner_and_reason"],
        summary["amounts"],
    )
    if approval:
        log.info("a real replay of this selection waits for a finance approval: %s", "; ".join(approval))
    return {**summary, "dry_run": bool(params.get("dry_run", True)), "needs_approval": approval}


def next_step(selected: dict[str, Any]) -> str | None:
    """After the selection: ``None`` (dry run, or nothing matched: stop), ``"approval"`` (over the
    approval limits: ask finance) or ``"release"``."""
    if selected["dry_run"] or selected["matched"] == 0:
        return None
    return "approval" if selected["needs_approval"] else "release"


def release_step(
    conn: psycopg.Connection,
    *,
    dag_id: str,
    run_id: str,
    params: dict[str, Any],
    selected: dict[str, Any],
    approval: Any,
    task_id: str = "release_for_posting",
) -> int:
    """Release the selection for posting (one transaction), never more than was selected (and
    approved); a replay that needs an approval is released only with one recorded."""
    approver = replay.approver_of(approval if selected["needs_approval"] else None)
    if selected["needs_approval"] and approver is None:
        raise ReplayRequestRefused("this replay needs a finance approval and none was recorded")
    with conn.transaction():
        rows = replay.select(conn, check_request(params))
        replay.check_within(replay.summarize(rows), selected)
        actor = f"{dag_id}.{task_id}" + (f" approved by {approver}" if approver else "")
        released = replay.release(conn, rows, run_id=run_id, actor=actor)
        if approver:
            replay.record_approval(conn, approver=approver, summary=selected, run_id=run_id, dag_id=dag_id)
    log.info("released %d postings for replay%s", released, f" (approved by {approver})" if approver else "")
    return released
