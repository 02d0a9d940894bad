"""Dead-letter replay: select rejected or parked postings by owner, reason, date range or ids, and
release them for the normal posting path (the same planner and engine, nothing special).
Billing documents (``invoice``, ``creditmemo``) are released the same way; the invoicing pass
then plans the same document's next ledger row (:func:`psa_erp_sync.billing.invoices.replan_released`).

Releasing marks the stuck ledger row ``superseded`` and the exception item ``replayed``; the
planner then plans a fresh posting (next sequence number, so a new idempotency key) from the
current canonical record, built with today's master data and mappings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg
from psycopg.rows import dict_row

from psa_erp_sync.contracts.kinds import KINDS, TIME_ENTRY
from psa_erp_sync.ods import audit
from psa_erp_sync.ods import exceptions as exception_queue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayFilter:
    record_type: str = TIME_ENTRY.record_type
    owner: str | None = None
    reason_code: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    source_ids: tuple[str, ...] = ()


KIND_OF = {
    **{kind.record_type: kind.name for kind in KINDS.values()},
    "invoice": "invoice",
    "creditmemo": "creditmemo",
}
# A billing document (docs/billing.md) is its own source: dated, totalled and in its currency.
_DOCUMENTS = (
    "(SELECT 'billing'::text AS source_system, document_ref AS source_id, doc_date AS spent_date,"
    " total_minor AS amount_minor, currency::text AS currency FROM billing.document WHERE doc_type = '{}')"
)
SOURCE_OF = {
    **{kind.record_type: kind.canonical_table for kind in KINDS.values()},
    "invoice": _DOCUMENTS.format("invoice"),
    "creditmemo": _DOCUMENTS.format("creditmemo"),
}


# Per record, the latest row of each lane (its own, and a parallel run's shadow: migration 0032)
# that is stuck: one row per exception item (the item is shared by both lanes), the own lane's
# first, with ``keys`` every stuck lane's key. Releasing a shadow row lets the planner re-plan the
# shadow lane only: the record's own lane never reads shadow rows (docs/multi-erp.md "Parallel run").
_STUCK = """
    SELECT (array_agg(l.idempotency_key ORDER BY l.shadow))[1] AS idempotency_key,
           (array_agg(l.state ORDER BY l.shadow))[1] AS state,
           (array_agg(l.external_id ORDER BY l.shadow))[1] AS external_id,
           array_agg(l.idempotency_key ORDER BY l.shadow) AS keys,
           array_agg(l.state ORDER BY l.shadow) AS states,
           array_agg(l.shadow ORDER BY l.shadow) AS lanes
    FROM (SELECT DISTINCT ON (p.shadow) p.* FROM ledger.posting p
          WHERE p.record_type = %(rt)s AND p.source_system = e.source_system AND p.source_id = e.source_id
          ORDER BY p.shadow, p.seq DESC) l
    WHERE l.state IN ('rejected', 'parked')
    HAVING count(*) > 0
"""


def select(conn: psycopg.Connection, f: ReplayFilter, limit: int = 100_000) -> list[dict[str, Any]]:
    """Open dead letters / parked items with their stuck ledger rows (``keys``: per lane, the
    record's own and a parallel run's shadow, the latest row when rejected or parked), matching
    the filter."""
    where = [
        "e.status = 'open'",
        "e.kind IN ('dead_letter', 'parked')",
        "e.record_type = %(kind)s",
    ]
    params: dict[str, Any] = {"kind": KIND_OF[f.record_type], "rt": f.record_type, "limit": limit}
    if f.owner:
        where.append("e.owner = %(owner)s")
        params["owner"] = f.owner
    if f.reason_code:
        where.append("e.reason_code = %(reason)s")
        params["reason"] = f.reason_code
    if f.date_from:
        where.append("c.spent_date >= %(from)s")
        params["from"] = f.date_from
    if f.date_to:
        where.append("c.spent_date <= %(to)s")
        params["to"] = f.date_to
    if f.source_ids:
        where.append("e.source_id = ANY(%(ids)s)")
        params["ids"] = list(f.source_ids)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"""
            SELECT e.id AS exception_id, e.kind, e.reason_code, e.owner, e.legal_entity, e.source_id,
                   p.idempotency_key, p.state, p.external_id, p.keys, p.states, p.lanes, c.spent_date,
                   c.amount_minor, c.currency
            FROM exceptions.item e
            JOIN LATERAL ({_STUCK}) p ON true
            LEFT JOIN {SOURCE_OF[f.record_type]} c ON c.source_system = e.source_system AND c.source_id = e.source_id
            WHERE {" AND ".join(where)}
            ORDER BY e.owner, e.reason_code, e.source_id
            LIMIT %(limit)s
            """,
            params,
        )
        return cur.fetchall()


def release(conn: psycopg.Connection, rows: list[dict[str, Any]], *, run_id: str, actor: str) -> int:
    """Let the planner take these records again; audited. Returns how many were released."""
    if not rows:
        return 0
    keys = [k for r in rows for k in r.get("keys") or [r["idempotency_key"]]]
    moved = conn.execute(
        "UPDATE ledger.posting SET state = 'superseded', updated_at = now()"
        " WHERE idempotency_key = ANY(%s) AND state IN ('rejected', 'parked')",
        (keys,),
    )
    if moved.rowcount < len(keys):  # the guard: only rejected or parked postings are released
        log.warning(
            "replay: %d of %d postings were no longer rejected or parked",
            len(keys) - moved.rowcount,
            len(keys),
        )
    exception_queue.mark_replayed(conn, [r["exception_id"] for r in rows], run_id=run_id)
    audit.record_many(
        conn,
        (
            audit.Change(
                actor,
                "replay",
                "ledger.posting",
                key,
                before={"state": state, "reason": r["reason_code"], "shadow": shadow},
                after={"state": "superseded"},
            )
            for r in rows
            for key, state, shadow in zip(
                r.get("keys") or [r["idempotency_key"]],
                r.get("states") or [r["state"]],
                r.get("lanes") or [False],
                strict=True,
            )
        ),
        run_id=run_id,
    )
    return len(rows)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts by owner and reason, and amounts per currency (minor units and as text) of a selection."""
    from psa_erp_sync.money import format_minor

    groups: dict[str, int] = {}
    amounts: dict[str, int] = {}
    for row in rows:
        key = f"{row['owner']}/{row['reason_code']}"
        groups[key] = groups.get(key, 0) + 1
        if row.get("amount_minor") is not None and row.get("currency"):
            amounts[row["currency"]] = amounts.get(row["currency"], 0) + int(row["amount_minor"])
    return {
        "matched": len(rows),
        "by_owner_and_reason": groups,
        "amounts_minor": amounts,
        "amounts": {c: format_minor(m, c) for c, m in sorted(amounts.items())},
    }


class SelectionGrew(RuntimeError):
    """The records to release now exceed what was selected (and approved) earlier in the run."""


def check_within(now: dict[str, Any], approved: dict[str, Any]) -> None:
    """Release no more than was selected (and, for a large replay, approved): more records, or a
    larger amount in any currency, fails; fewer (some were fixed meanwhile) is fine."""
    if now["matched"] > approved["matched"]:
        raise SelectionGrew(
            f"{now['matched']} records match now, {approved['matched']} were selected: trigger again"
        )
    for currency, minor in now["amounts_minor"].items():
        if abs(minor) > abs(approved["amounts_minor"].get(currency, 0)):
            raise SelectionGrew(f"the {currency} amount grew since the selection: trigger again")


def approver_of(approval: Any) -> str | None:
    """Who approved, from the approval task's result (``ApprovalOperator``): the user id, or None
    when there is no approval or it was not "Approve"."""
    if not isinstance(approval, dict) or approval.get("chosen_options") != ["Approve"]:
        return None
    user = approval.get("responded_by_user") or {}
    return str(user.get("id") or user.get("name") or "") or None


def record_approval(
    conn: psycopg.Connection, *, approver: str, summary: dict[str, Any], run_id: str, dag_id: str
) -> None:
    """The approval in the audit trail: who, for which run, what was approved (counts, amounts)."""
    audit.record(
        conn,
        audit.Change(
            approver,
            "replay_approved",
            "dead_letter_replay",
            f"{dag_id}/{run_id}",
            after={
                k: summary[k] for k in ("matched", "amounts_minor", "by_owner_and_reason", "needs_approval")
            },
        ),
        run_id=run_id,
    )
