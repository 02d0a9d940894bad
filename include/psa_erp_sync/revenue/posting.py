"""Post planned revenue journals to the ERP as ``journalentry`` records, through the posting ledger.

``revenue.journal`` rows in state ``planned`` (never the parked ones: finance decides those) get a
``ledger.posting`` row with the journal's own deterministic idempotency key and external id,
committed before the ERP is called; then the :class:`~psa_erp_sync.posting.engine.PostingEngine`
sends them like every posting (batches, read-back by external id before any resend, the ERP
account's shared budget, the ``journalentry`` posting lock). A rerun finds the rows in the ledger
and sends nothing new.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from psa_erp_sync import money
from psa_erp_sync.config import Config
from psa_erp_sync.ods import connections
from psa_erp_sync.posting import budget, ledger
from psa_erp_sync.posting.engine import EngineSettings, PostingEngine
from psa_erp_sync.posting.service import LockSettings, posting_lock
from psa_erp_sync.revenue.journals import RECORD_TYPE
from psa_erp_sync.revenue.store import SOURCE_SYSTEM

log = logging.getLogger(__name__)

_UNPOSTED = """
    SELECT j.idempotency_key, j.external_id, j.legal_entity, j.currency, j.period_month, j.posting_period,
           j.posting_month, j.recognition_period, j.inputs_hash, j.debit_minor,
           array_agg(l.account ORDER BY l.line_no) AS accounts,
           array_agg(l.debit_minor ORDER BY l.line_no) AS debits,
           array_agg(l.credit_minor ORDER BY l.line_no) AS credits
    FROM revenue.journal j JOIN revenue.journal_line l ON l.idempotency_key = j.idempotency_key
    WHERE j.state = 'planned'
      AND NOT EXISTS (SELECT 1 FROM ledger.posting p WHERE p.idempotency_key = j.idempotency_key)
    GROUP BY j.idempotency_key ORDER BY j.idempotency_key
"""


def _month_end(first: date) -> date:
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def journal_posting(row: dict[str, Any]) -> ledger.Posting:
    """The ledger row of a planned journal: its own key and external id, the lines as planned."""
    currency = str(row["currency"])
    key, ext = str(row["idempotency_key"]), str(row["external_id"])
    lines = []
    for account, debit, credit in zip(row["accounts"], row["debits"], row["credits"], strict=True):
        side = {"debit": money.format_minor(int(debit), currency)} if debit else {}
        side = side or {"credit": money.format_minor(int(credit), currency)}
        lines.append({"account": {"externalId": account}, **side})
    moved = row["posting_month"] != row["period_month"]
    payload = {
        "externalId": ext,
        # dated the last day of its recognition period, or the first day of the period it moved to
        "tranDate": str(row["posting_month"] if moved else _month_end(row["period_month"])),
        "subsidiary": {"externalId": row["legal_entity"]},
        "currency": {"refName": currency},
        "postingPeriod": {"externalId": row["posting_period"]},
        "memo": f"revenue:{ext} key:{key[:16]}"
        + (f" orig-period:{row['recognition_period']}" if moved else ""),
        "line": {"items": lines},
    }
    return ledger.Posting(
        key,
        RECORD_TYPE,
        SOURCE_SYSTEM,
        ext,
        str(row["inputs_hash"])[:16],
        ext,
        "post",
        "pending",
        payload,
        str(row["legal_entity"]),
        str(row["posting_period"]),
        int(row["debit_minor"]),
        currency,
    )


def plan_journal_postings(conn: psycopg.Connection) -> int:
    """Ledger rows for the planned journals that have none yet (one transaction); how many."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_UNPOSTED).fetchall()
        return len(ledger.insert_planned(conn, [journal_posting(r) for r in rows]))


def post_planned_journals(
    *,
    dsn: str,
    client: Any,
    config: Config,
    settings: EngineSettings,
    run_id: str,
    task_try: int | None = None,
    lock_settings: LockSettings | None = None,
) -> dict[str, Any]:
    """Plan and post every planned revenue journal; the engine's outcome plus ``planned``."""
    lock_settings = lock_settings or LockSettings(wait_s=config.mappings.posting.lock_wait_seconds)
    with posting_lock(dsn, RECORD_TYPE, lock_settings) as lock, budget.shared_by_processes(client, dsn):
        with connections.connect(dsn) as conn:
            planned = plan_journal_postings(conn)
        engine = PostingEngine(
            dsn=dsn,
            client=client,
            record_type=RECORD_TYPE,
            config=config,
            settings=settings,
            dag_run_id=run_id,
            task_try=task_try,
            lock_check=lock.check,
        )
        outcome = engine.run().as_dict()
    log.info("revenue journals: %d newly in the ledger; %s", planned, outcome)
    return {"planned": planned, **outcome}
